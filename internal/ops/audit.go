package ops

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moatdb/moat/internal/domain"
)

// AuditEntry turns an endpoint event on node target of project into an
// audit log entry: the actor is the grant (its operator is in the grant's
// own entry), a refusal is denied, everything else a success, and the
// details are key=value pairs.
func (e Event) AuditEntry(project, target string) domain.AuditEntry {
	actor := "ops:unknown"
	if e.GrantID != "" {
		actor = "ops:" + e.GrantID
	}
	outcome := domain.OutcomeSuccess
	if e.Action == ActionRefused {
		outcome = domain.OutcomeDenied
	}
	var d []string
	add := func(k, v string) {
		if v != "" {
			d = append(d, k+"="+strconv.Quote(v))
		}
	}
	add("session", e.Session)
	add("user", e.User)
	if e.Serial != 0 {
		add("serial", strconv.FormatUint(e.Serial, 10))
	}
	add("reason", e.Reason)
	add("command", e.Command)
	if e.Action == ActionSessionClosed {
		add("duration", e.Duration.String())
		add("bytes", fmt.Sprintf("in %d out %d", e.BytesIn, e.BytesOut))
	}
	add("detail", e.Detail)
	return domain.AuditEntry{
		Time:      e.Time,
		Actor:     actor,
		ProjectID: project,
		Action:    e.Action,
		Target:    target,
		Source:    e.Remote,
		Outcome:   outcome,
		Detail:    strings.Join(d, " "),
	}
}
