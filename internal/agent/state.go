package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/atomicfile"
)

// stateVersion is the version of agent-state.json's format.
const stateVersion = 1

// state is agent-state.json: the last desired state received.
type state struct {
	Version int                 `json:"version"`
	Desired apitype.HostDesired `json:"desired"`
}

// loadState returns the persisted desired state, or nil when there is
// none.
func (a *Agent) loadState() (*apitype.HostDesired, error) {
	b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load agent state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s state
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("load agent state: %w", err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("load agent state: version %d, want %d", s.Version, stateVersion)
	}
	if s.Desired.Host != a.cfg.Host {
		return nil, fmt.Errorf("load agent state: it is host %q's, not %q's", s.Desired.Host, a.cfg.Host)
	}
	return &s.Desired, nil
}

// saveState writes d to agent-state.json atomically, mode 0600.
func (a *Agent) saveState(d apitype.HostDesired) error {
	if d.Host == "" {
		d.Host = a.cfg.Host
	}
	// A restore's private key is never written down here: a restarted
	// agent gets it from the control plane again.
	d.Nodes = slices.Clone(d.Nodes)
	for i, nd := range d.Nodes {
		if nd.Restore != nil && nd.Restore.PrivateKeyPEM != "" {
			r := *nd.Restore
			r.PrivateKeyPEM = ""
			d.Nodes[i].Restore = &r
		}
	}
	b, err := json.Marshal(state{Version: stateVersion, Desired: d})
	if err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	return nil
}
