package ops

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
)

func TestEventAuditEntry(t *testing.T) {
	now := time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		e    Event
		want domain.AuditEntry
	}{
		{
			Event{Time: now, Action: ActionRefused, Reason: ReasonPassword, Detail: "passwords are not accepted", Session: "ses-1", Remote: "10.250.0.1:5000", User: "root"},
			domain.AuditEntry{Time: now, Actor: "ops:unknown", ProjectID: "proj-a", Action: "ops.refused", Target: "node-a", Source: "10.250.0.1:5000", Outcome: domain.OutcomeDenied,
				Detail: `session="ses-1" user="root" reason="password" detail="passwords are not accepted"`},
		},
		{
			Event{Time: now, Action: ActionExec, Session: "ses-2", Remote: "10.250.0.1:5001", User: "moat-ops", GrantID: "grant-x", Serial: 7, Command: `cat "/etc/hosts"`},
			domain.AuditEntry{Time: now, Actor: "ops:grant-x", ProjectID: "proj-a", Action: "ops.exec", Target: "node-a", Source: "10.250.0.1:5001", Outcome: domain.OutcomeSuccess,
				Detail: `session="ses-2" user="moat-ops" serial="7" command="cat \"/etc/hosts\""`},
		},
		{
			Event{Time: now, Action: ActionSessionClosed, Reason: CloseRevoked, Session: "ses-2", GrantID: "grant-x", Serial: 7, Duration: 1500 * time.Millisecond, BytesIn: 3, BytesOut: 40},
			domain.AuditEntry{Time: now, Actor: "ops:grant-x", ProjectID: "proj-a", Action: "ops.session.close", Target: "node-a", Outcome: domain.OutcomeSuccess,
				Detail: `session="ses-2" serial="7" reason="revoked" duration="1.5s" bytes="in 3 out 40"`},
		},
	} {
		if diff := cmp.Diff(tc.want, tc.e.AuditEntry("proj-a", "node-a")); diff != "" {
			t.Errorf("AuditEntry(%s) (-want +got):\n%s", tc.e.Action, diff)
		}
	}
}
