package agent

import (
	"context"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
)

// APISource is the control plane's API as a Source.
type APISource struct {
	Client *client.Client
}

// Desired long-polls GET /v1/hosts/{host}/desired.
func (s APISource) Desired(ctx context.Context, host string, after int64) (apitype.HostDesired, error) {
	return s.Client.HostDesired(ctx, host, after)
}

// Report posts to /v1/hosts/{host}/report.
func (s APISource) Report(ctx context.Context, host string, r apitype.HostReport) error {
	return s.Client.ReportHost(ctx, host, r)
}

// Stats posts to /v1/hosts/{host}/stats.
func (s APISource) Stats(ctx context.Context, host string, st apitype.HostStats) error {
	return s.Client.HostStats(ctx, host, st)
}
