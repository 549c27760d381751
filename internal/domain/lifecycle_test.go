package domain

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Minute)
)

func TestOperationTransitions(t *testing.T) {
	fail := Info{Code: "boom", Message: "it failed", Cause: "stderr: /var/lib/x: EIO"}
	for _, tc := range []struct {
		name      string
		from      string
		do        func(*Operation) error
		wantState string
		wantErr   *errSummary
		wantError *Info
	}{
		{"start", StatePending, func(o *Operation) error { return o.Start(StepAddNetwork, t1) }, StateRunning, nil, nil},
		{"start twice", StateRunning, func(o *Operation) error { return o.Start("", t1) }, StateRunning,
			&errSummary{CodeInvalidState, "state", "from running a operation may become succeeded, failed"}, nil},
		{"succeed", StateRunning, func(o *Operation) error { return o.Succeed(t1) }, StateSucceeded, nil, nil},
		{"succeed pending", StatePending, func(o *Operation) error { return o.Succeed(t1) }, StatePending,
			&errSummary{CodeInvalidState, "state", "from pending a operation may become running, failed"}, nil},
		{"fail pending", StatePending, func(o *Operation) error { return o.Fail(fail, t1) }, StateFailed, nil, &fail},
		{"fail running", StateRunning, func(o *Operation) error { return o.Finish(&fail, t1) }, StateFailed, nil, &fail},
		{"finish ok", StateRunning, func(o *Operation) error { return o.Finish(nil, t1) }, StateSucceeded, nil, nil},
		{"fail finished", StateSucceeded, func(o *Operation) error { return o.Fail(fail, t1) }, StateSucceeded,
			&errSummary{CodeInvalidState, "state", "the operation is succeeded and cannot change"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOperation("proj-1", OpServiceAttach, "svc-1", t0)
			o.State = tc.from
			err := tc.do(o)
			if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if o.State != tc.wantState || !cmp.Equal(o.Error, tc.wantError) {
				t.Errorf("operation = %s %+v, want %s %+v", o.State, o.Error, tc.wantState, tc.wantError)
			}
			if err == nil && !o.UpdatedAt.Equal(t1) {
				t.Errorf("UpdatedAt = %v, want %v", o.UpdatedAt, t1)
			}
		})
	}
}

func TestNewOperation(t *testing.T) {
	o := NewOperation("proj-1", OpServiceBackup, "svc-1", t0)
	if !ValidID(PrefixOperation, o.ID) || o.State != StatePending || o.ProjectID != "proj-1" || o.TargetID != "svc-1" || !o.CreatedAt.Equal(t0) || !o.Live() {
		t.Errorf("NewOperation = %+v", o)
	}
}

// TestApplyReportChanged: ApplyReport reports a change only for what the
// platform acts on (state, state info, applied revisions, a volume lost
// or full, replication as Turned sees it), not for the facts that move
// with every report (WAL positions, bytes used).
func TestApplyReportChanged(t *testing.T) {
	vol := NodeVolume{Format: "LUKS2", Size: 1 << 30, Used: 1 << 20}
	base := NodeReport{Revision: 3, AllowlistRevision: 2, State: NodeReportRunning, Volume: &vol,
		Replication: &ReplicationReport{Up: true, ReceivedLSN: 100, Standbys: []StandbyStatus{{Name: "r1", SyncState: SyncStateQuorum}}}}
	with := func(edit func(r *NodeReport)) NodeReport {
		r := base
		v, repl := *base.Volume, *base.Replication
		r.Volume, r.Replication = &v, &repl
		edit(&r)
		return r
	}
	for _, tc := range []struct {
		name   string
		report NodeReport
		want   bool
	}{
		{"the same", base, false},
		{"WAL and bytes used moved", with(func(r *NodeReport) { r.Replication.ReceivedLSN, r.Volume.Used = 900, 2<<20 }), false},
		{"failed", with(func(r *NodeReport) { r.State, r.Message = NodeReportFailed, "postgres exited" }), true},
		{"a new revision applied", with(func(r *NodeReport) { r.Revision = 4 }), true},
		{"a new allowlist applied", with(func(r *NodeReport) { r.AllowlistRevision = 3 }), true},
		{"PostgreSQL down", with(func(r *NodeReport) { r.Replication.Up, r.Replication.DownSince = false, t1 }), true},
		{"a standby's sync state", with(func(r *NodeReport) {
			r.Replication.Standbys = []StandbyStatus{{Name: "r1", SyncState: SyncStatePotential}}
		}), true},
		{"volume full", with(func(r *NodeReport) { r.Volume.Full = true }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{Meta: Meta{ID: "node-1", State: StateCreating}}
			if changed, err := n.ApplyReport(base, t0); err != nil || !changed {
				t.Fatalf("first report: changed %v, %v; want a change", changed, err)
			}
			changed, err := n.ApplyReport(tc.report, t1)
			if err != nil || changed != tc.want {
				t.Errorf("ApplyReport(%s) = %v, %v; want %v", tc.name, changed, err, tc.want)
			}
		})
	}
}

func TestNodeApplyReport(t *testing.T) {
	archive := &ArchiveStatus{LastArchivedWAL: "000000010000000000000003"}
	fullVolume := &NodeVolume{Format: "LUKS2", Cipher: "aes-xts-plain64", Engine: "userspace", Size: 1 << 30, Used: 1 << 30, Full: true}
	for _, tc := range []struct {
		name     string
		from     string
		info     *Info
		report   NodeReport
		want     string
		wantInfo *Info
		wantErr  *errSummary
	}{
		{"creating runs", StateCreating, nil, NodeReport{State: NodeReportRunning, Revision: 4, AllowlistRevision: 2, Archive: archive}, StateRunning, nil, nil},
		{"failed recovers", StateFailed, &Info{Code: CodeNodeFailed}, NodeReport{State: NodeReportRunning}, StateRunning, nil, nil},
		{"running fails, cause kept internal", StateRunning, nil, NodeReport{State: NodeReportFailed, Message: "initdb: /data: EACCES"}, StateFailed,
			&Info{Code: CodeNodeFailed, Message: "the node's PostgreSQL could not be set up or started", Cause: "initdb: /data: EACCES"}, nil},
		{"deleting failure stays deleting", StateDeleting, nil, NodeReport{State: NodeReportFailed, Message: "x"}, StateDeleting,
			&Info{Code: CodeNodeFailed, Message: "the node's PostgreSQL could not be set up or started", Cause: "x"}, nil},
		{"deleting wiped", StateDeleting, nil, NodeReport{State: NodeReportWiped}, StateDeleting, &Info{Code: CodeWiped, Message: "PostgreSQL stopped and data wiped"}, nil},
		{"running wiped ignored", StateRunning, nil, NodeReport{State: NodeReportWiped}, StateRunning, nil, nil},
		{"deleting does not run again", StateDeleting, nil, NodeReport{State: NodeReportRunning}, StateDeleting, nil, nil},
		{"unknown state", StateRunning, nil, NodeReport{State: "sleeping"}, StateRunning, nil, &errSummary{CodeInvalidState, "state", "use running, failed or wiped"}},
		{"full volume says so", StateRunning, nil, NodeReport{State: NodeReportFailed, Message: "volume full", Volume: fullVolume}, StateFailed,
			&Info{Code: CodeVolumeFull, Message: volumeFullMessage, Cause: "volume full"}, nil},
		{"lost volume says so", StateRunning, nil, NodeReport{State: NodeReportFailed, Message: "volume key lost", Volume: &NodeVolume{Format: "LUKS2", Lost: true}}, StateFailed,
			&Info{Code: CodeVolumeLost, Message: volumeLostMessage, Cause: "volume key lost"}, nil},
		{"freed volume runs again", StateFailed, &Info{Code: CodeVolumeFull}, NodeReport{State: NodeReportRunning, Volume: &NodeVolume{Format: "LUKS2", Size: 1 << 30, Used: 1 << 29}}, StateRunning, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{Meta: Meta{ID: "node-1", State: tc.from, StateInfo: tc.info}, AppliedAllowlistRevision: 1}
			_, err := n.ApplyReport(tc.report, t1)
			if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if n.State != tc.want || !cmp.Equal(n.StateInfo, tc.wantInfo) {
				t.Errorf("node = %s %+v, want %s %+v", n.State, n.StateInfo, tc.want, tc.wantInfo)
			}
			if err != nil {
				return
			}
			if n.AppliedRevision != tc.report.Revision || !n.ReportedAt.Equal(t1) || n.AppliedAllowlistRevision != max(1, tc.report.AllowlistRevision) {
				t.Errorf("node revisions = %d %d at %v", n.AppliedRevision, n.AppliedAllowlistRevision, n.ReportedAt)
			}
			if tc.report.Archive != nil && (n.Archive == nil || *n.Archive != *tc.report.Archive || n.Archive == tc.report.Archive) {
				t.Errorf("node archive = %+v, want a copy of %+v", n.Archive, tc.report.Archive)
			}
			if tc.report.Volume != nil && (n.Volume == nil || *n.Volume != *tc.report.Volume || n.Volume == tc.report.Volume) {
				t.Errorf("node volume = %+v, want a copy of %+v", n.Volume, tc.report.Volume)
			}
		})
	}
	gone := &Node{Meta: Meta{State: StateDeleted}}
	if gone.AcceptsReports() {
		t.Error("a deleted node accepts reports")
	}
}

func TestOperationApplyTaskReport(t *testing.T) {
	end := t0.Add(-time.Hour)
	for _, tc := range []struct {
		name        string
		typ, from   string
		report      TaskReport
		wantChanged bool
		wantState   string
		wantLabel   string
		wantError   *Info
		wantErr     *errSummary
	}{
		{"backup done", OpServiceBackup, StateRunning, TaskReport{State: TaskDone, Backup: &BaseBackup{Label: "L1", EndTime: end}}, true, StateSucceeded, "L1", nil, nil},
		{"done before the reconciler started it", OpServiceSwitchWAL, StatePending, TaskReport{State: TaskDone}, true, StateSucceeded, "", nil, nil},
		{"backup failed: stderr is the cause only", OpServiceBackup, StateRunning, TaskReport{State: TaskFailed, Message: "pg_basebackup: error: /pgdata: ENOSPC"}, true, StateFailed, "",
			&Info{Code: CodeTaskFailed, Message: "the base backup of the service's primary failed; retry later, or ask the platform operator", Cause: "pg_basebackup: error: /pgdata: ENOSPC"}, nil},
		{"late report", OpServiceBackup, StateFailed, TaskReport{State: TaskDone}, false, StateFailed, "", nil, nil},
		{"unknown state", OpServiceBackup, StateRunning, TaskReport{State: "maybe"}, false, StateRunning, "", nil, &errSummary{CodeInvalidState, "state", "use done or failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOperation("proj-1", tc.typ, "svc-1", t0)
			o.State = tc.from
			changed, err := o.ApplyTaskReport(tc.report, t1)
			if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if changed != tc.wantChanged || o.State != tc.wantState || o.BackupLabel != tc.wantLabel || !cmp.Equal(o.Error, tc.wantError) {
				t.Errorf("ApplyTaskReport = %v: %s %q %+v, want %v: %s %q %+v", changed, o.State, o.BackupLabel, o.Error, tc.wantChanged, tc.wantState, tc.wantLabel, tc.wantError)
			}
		})
	}
}

func TestServiceRollup(t *testing.T) {
	node := func(state string, allow int64) *Node {
		return &Node{Meta: Meta{State: state}, ServiceID: "svc-1", AppliedAllowlistRevision: allow}
	}
	for _, tc := range []struct {
		name                   string
		state                  string
		nodes                  []*Node
		wantState              string
		wantApplied            int64
		wantChanged, published bool
	}{
		{"all running", StateCreating, []*Node{node(StateRunning, 1), node(StateRunning, 1)}, StateRunning, 1, true, true},
		{"one still creating", StateCreating, []*Node{node(StateRunning, 1), node(StateCreating, 0)}, StateCreating, 0, false, false},
		{"applied is the lowest", StateRunning, []*Node{node(StateRunning, 3), node(StateRunning, 2)}, StateRunning, 2, true, false},
		{"deleting nodes do not count", StateRunning, []*Node{node(StateRunning, 3), node(StateDeleting, 1)}, StateRunning, 3, true, false},
		{"nothing new", StateRunning, []*Node{node(StateRunning, 0), node(StateRunning, 0)}, StateRunning, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{Meta: Meta{ID: "svc-1", State: tc.state}, NodeCount: 2}
			changed, published := s.Rollup(tc.nodes, t1)
			if changed != tc.wantChanged || published != tc.published || s.State != tc.wantState || s.AppliedAllowlistRevision != tc.wantApplied {
				t.Errorf("Rollup = %v %v, service %s applied %d; want %v %v, %s %d", changed, published, s.State, s.AppliedAllowlistRevision, tc.wantChanged, tc.published, tc.wantState, tc.wantApplied)
			}
		})
	}
}

func TestServiceLifecycle(t *testing.T) {
	s := &Service{Meta: Meta{ID: "svc-1", State: StateRunning}, AdminVerifier: "SCRAM", BackupKeySealed: []byte("k")}
	if err := s.BeginMigration("op-1", t1); err != nil || s.State != StateMigrating || s.OperationID != "op-1" {
		t.Fatalf("BeginMigration = %v: %s %q", err, s.State, s.OperationID)
	}
	if err := s.BeginMigration("op-2", t1); AsError(err) == nil || s.OperationID != "op-1" {
		t.Errorf("a second migration = %v (operation %q), want a conflict", err, s.OperationID)
	}
	if s.EndOperation("op-other", t1) || !s.EndOperation("op-1", t1) || s.State != StateRunning || s.OperationID != "" {
		t.Errorf("EndOperation: %s %q, want running with no operation", s.State, s.OperationID)
	}
	if started, err := s.BeginDelete(t1); !started || err != nil || s.State != StateDeleting {
		t.Fatalf("BeginDelete = %v %v: %s", started, err, s.State)
	}
	if started, err := s.BeginDelete(t1); started || err != nil {
		t.Errorf("BeginDelete again = %v %v, want false, nil", started, err)
	}
	if err := s.MarkDeleted(t1); err != nil || s.State != StateDeleted || s.AdminVerifier != "" || s.BackupKeySealed != nil {
		t.Errorf("MarkDeleted = %v: %+v", err, s)
	}
	c := &Service{Meta: Meta{State: StateCreating}}
	if err := c.Fail(Info{Code: CodeRestoreFailed, Message: "m"}, t1); err != nil || c.State != StateFailed || c.StateInfo.Code != CodeRestoreFailed {
		t.Errorf("Fail = %v: %s %+v", err, c.State, c.StateInfo)
	}
	if !c.RecordBackup(t0, t1) || c.RecordBackup(t0.Add(-time.Second), t1) || !c.LastBackupAt.Equal(t0) {
		t.Errorf("RecordBackup: last %v, want %v", c.LastBackupAt, t0)
	}
}

func TestNodeAndTokenLifecycle(t *testing.T) {
	svc := &Service{Meta: Meta{ID: "svc-1", ProjectID: "proj-1"}}
	n := NewNode(svc, 1, "a", t0)
	if n.State != StateCreating || n.ServiceID != "svc-1" || n.ProjectID != "proj-1" || n.Index != 1 || !ValidID(PrefixNode, n.ID) {
		t.Fatalf("NewNode = %+v", n)
	}
	if err := n.MarkDeleted(t1); AsError(err) == nil {
		t.Errorf("a creating node deleted without deleting first: %v", err)
	}
	n.KeySealed = []byte("k")
	if started, err := n.BeginDelete(t1); !started || err != nil {
		t.Fatalf("BeginDelete = %v %v", started, err)
	}
	if n.Wiped() {
		t.Error("a node is wiped before its agent says so")
	}
	if err := n.MarkDeleted(t1); err != nil || n.State != StateDeleted || n.KeySealed != nil {
		t.Errorf("MarkDeleted = %v: %s %v", err, n.State, n.KeySealed)
	}
	tok := NewToken("", "agent", RoleAgent, "hash", "h1", t0)
	if tok.State != StateActive || tok.Host != "h1" {
		t.Fatalf("NewToken = %+v", tok)
	}
	if err := tok.Revoke(t1); err != nil || tok.State != StateDeleted {
		t.Errorf("Revoke = %v: %s", err, tok.State)
	}
	if err := tok.Revoke(t1); AsError(err) == nil {
		t.Errorf("revoking twice = %v, want a conflict", err)
	}
	p := NewProject("acme", t0)
	if p.ProjectID != p.ID || p.State != StateActive || p.VPCQuota != DefaultVPCQuota {
		t.Errorf("NewProject = %+v", p)
	}
}

func TestNetworkTransitions(t *testing.T) {
	v := &VPC{Meta: Meta{State: StateCreating}}
	if err := v.Transition(StateActive, nil, t1); err != nil || v.State != StateActive {
		t.Fatalf("VPC creating → active = %v", err)
	}
	if err := v.Transition(StateCreating, nil, t1); AsError(err) == nil {
		t.Errorf("VPC active → creating = %v, want a conflict", err)
	}
	if started, err := v.BeginDelete(t1); !started || err != nil || v.State != StateDeleting {
		t.Errorf("VPC BeginDelete = %v %v: %s", started, err, v.State)
	}
	p := &Peering{Meta: Meta{State: StatePendingAcceptance}}
	info := &Info{Code: "rejected", Message: "the peer rejected it"}
	if err := p.Transition(StateRejected, info, t1); err != nil || p.StateInfo != info {
		t.Fatalf("peering pending → rejected = %v", err)
	}
	if started, err := p.BeginDelete(t1); !started || err != nil || p.State != StateDeleting || p.StateInfo != info {
		t.Errorf("peering BeginDelete = %v %v: %s %+v (keeps its info)", started, err, p.State, p.StateInfo)
	}
}

func TestNextBackup(t *testing.T) {
	svc := &Service{Meta: Meta{ID: "svc-1", ProjectID: "proj-1"}}
	running := NewOperation("proj-1", OpServiceBackup, "svc-1", t0)
	running.State = StateRunning
	other := NewOperation("proj-1", OpServiceSwitchWAL, "svc-1", t0)
	if op, created := NextBackup(svc, []*Operation{other, running}, t1); created || op != running {
		t.Errorf("NextBackup with one running = %+v %v, want the running one", op, created)
	}
	op, created := NextBackup(svc, []*Operation{other}, t1)
	if !created || op.Type != OpServiceBackup || op.TargetID != "svc-1" || op.State != StatePending {
		t.Errorf("NextBackup = %+v %v, want a new pending backup", op, created)
	}
}

func TestPlanRestore(t *testing.T) {
	now := t0
	b1 := BaseBackup{Label: "B1", EndTime: now.Add(-3 * time.Hour)}
	b2 := BaseBackup{Label: "B2", EndTime: now.Add(-time.Hour)}
	office := []AllowEntry{{CIDR: "203.0.113.0/24", Description: "office"}}
	src := &Service{Meta: Meta{ID: "svc-src", State: StateRunning}, Region: "us-east-1", NodeCount: 3, AllowedIPs: office, BackupPublicKeyPEM: "PUB"}
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	for _, tc := range []struct {
		name    string
		src     *Service
		req     RestoreRequest
		backups []BaseBackup
		want    *RestorePlan
		wantErr *errSummary
	}{
		{"newest, source's settings", src, RestoreRequest{}, []BaseBackup{b1, b2},
			&RestorePlan{Source: src, Backup: b2, Region: "us-east-1", Nodes: 3, AllowedIPs: office}, nil},
		{"to a time between", src, RestoreRequest{ToTime: at(-2 * time.Hour), Nodes: 1, AllowedIPs: []AllowEntry{{CIDR: "198.51.100.0/24"}}}, []BaseBackup{b1, b2},
			&RestorePlan{Source: src, Backup: b1, ToTime: now.Add(-2 * time.Hour), Region: "us-east-1", Nodes: 1, AllowedIPs: []AllowEntry{{CIDR: "198.51.100.0/24"}}}, nil},
		{"confirmed empty allowlist", src, RestoreRequest{ConfirmEmpty: true}, []BaseBackup{b1},
			&RestorePlan{Source: src, Backup: b1, Region: "us-east-1", Nodes: 3, ConfirmEmpty: true}, nil},
		{"deleting source", &Service{Meta: Meta{ID: "svc-src", State: StateDeleting}}, RestoreRequest{}, []BaseBackup{b1}, nil,
			&errSummary{CodeInvalidState, "restore_from.service_id", "restore from a live service"}},
		{"other region", src, RestoreRequest{Region: "eu-west-1"}, []BaseBackup{b1}, nil,
			&errSummary{CodeRegionMismatch, "region", "omit region, or give the source's region us-east-1: backups stay in their region"}},
		{"future time", src, RestoreRequest{ToTime: at(time.Second)}, []BaseBackup{b1}, nil,
			&errSummary{CodeInvalidTime, "restore_from.to_time", "give a time in the past (RFC 3339), or omit it to restore everything committed so far"}},
		{"no backup", src, RestoreRequest{}, nil, nil,
			&errSummary{CodeNoBackup, "restore_from.service_id", "take one first: moat backup create svc-src --wait"}},
		{"before the first backup", src, RestoreRequest{ToTime: at(-4 * time.Hour)}, []BaseBackup{b1, b2}, nil,
			&errSummary{CodeBeforeFirstBackup, "restore_from.to_time", "give a time after " + b1.EndTime.Format(time.RFC3339Nano) + ", the end of the oldest base backup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanRestore(tc.src, tc.req, tc.backups, now)
			if diff := cmp.Diff(tc.wantErr, summarize(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStartRestore(t *testing.T) {
	src := &Service{Meta: Meta{ID: "svc-src", ProjectID: "proj-1", State: StateRunning}, BackupPublicKeyPEM: "PUB",
		Settings: map[string]string{"max_connections": "300", "work_mem": "8MB"}, NodeSettings: map[string]string{"max_connections": "200"}}
	plan := &RestorePlan{Source: src, Backup: BaseBackup{Label: "B1"}, ToTime: t0}
	svc := &Service{Meta: Meta{ID: "svc-new", ProjectID: "proj-1", State: StateCreating}}
	op, sw, err := StartRestore(svc, src, plan, t1)
	if err != nil {
		t.Fatal(err)
	}
	if op.Type != OpServiceRestore || op.SourceID != "svc-src" || op.BackupLabel != "B1" || sw == nil || sw.Type != OpServiceSwitchWAL || sw.TargetID != "svc-src" || op.WaitID != sw.ID {
		t.Errorf("StartRestore = %+v, %+v", op, sw)
	}
	if svc.RestoreFrom != "svc-src" || svc.RestoreBackup != "B1" || !svc.RestoreToTime.Equal(t0) || svc.OperationID != op.ID {
		t.Errorf("restored service = %+v", svc)
	}
	// Its nodes replay the source's WAL: they start with the source's
	// nodes' max_connections, the source's pending one still pending.
	if n := NewNode(svc, 0, "a", t1); n.Settings["max_connections"] != "200" || !cmp.Equal(svc.PendingRestart(), []string{"max_connections"}) || svc.Settings["work_mem"] != "8MB" {
		t.Errorf("restored service: settings %v, node starts with %v, pending %v", svc.Settings, n.Settings, svc.PendingRestart())
	}
	stopped := *src
	stopped.State = StateFailed
	if _, sw, err := StartRestore(&Service{Meta: Meta{ID: "svc-2"}}, &stopped, plan, t1); err != nil || sw != nil {
		t.Errorf("restore of a stopped source = %+v %v, want no WAL switch", sw, err)
	}
	rekeyed := *src
	rekeyed.BackupPublicKeyPEM = "OTHER"
	if _, _, err := StartRestore(&Service{Meta: Meta{ID: "svc-3"}}, &rekeyed, plan, t1); err == nil || !strings.Contains(err.Error(), "backup key") {
		t.Errorf("restore after a key change = %v, want a conflict", err)
	}
}

func TestNames(t *testing.T) {
	svc := &Service{Meta: Meta{ID: "svc-a", ProjectID: "proj-b"}}
	n := &Node{Meta: Meta{ID: "node-c"}, Address: "198.18.0.9"}
	if got := ServiceName(svc, "moat.test"); got != "svc-a.proj-b.moat.test" {
		t.Errorf("public ServiceName = %q", got)
	}
	attached := &Service{Meta: Meta{ID: "svc-a", ProjectID: "proj-b"}, VPCID: "vpc-x"}
	if got := ServiceName(attached, "moat.test"); got != "svc-a.proj-b.vpc.moat.test" {
		t.Errorf("private ServiceName = %q", got)
	}
	if got := ReadOnlyName(attached, "moat.test"); got != "ro.svc-a.proj-b.vpc.moat.test" {
		t.Errorf("private ReadOnlyName = %q", got)
	}
	want := []string{"svc-a.proj-b.moat.test", "svc-a.proj-b.vpc.moat.test", "ro.svc-a.proj-b.moat.test", "ro.svc-a.proj-b.vpc.moat.test",
		"node-c.svc-a.proj-b.moat.test", "198.18.0.9"}
	if diff := cmp.Diff(want, CertNames(n, svc, "moat.test")); diff != "" {
		t.Errorf("CertNames (-want +got):\n%s", diff)
	}
	// The labels are stored with every sealed key: they never change.
	for got, want := range map[string]string{
		string(ProjectCAKeyAD("p")): "project-ca-key:p", string(BackupKeyAD("s")): "service-backup-key:s",
		string(NodeKeyAD("n")): "node-key:n", string(ReplKeyAD("n")): "node-repl-key:n",
	} {
		if got != want {
			t.Errorf("key label %q, want %q", got, want)
		}
	}
}

func TestNodeDesiredState(t *testing.T) {
	for _, tc := range []struct{ svc, node, want string }{
		{StateRunning, StateRunning, StateRunning},
		{StateRunning, StateCreating, StateCreating},
		{StateDegraded, StateFailed, StateFailed},
		{StateDeleting, StateRunning, StateDeleting},
		{StateDeleting, StateCreating, StateDeleting},
	} {
		n := &Node{Meta: Meta{State: tc.node}}
		if got := n.DesiredState(&Service{Meta: Meta{State: tc.svc}}); got != tc.want {
			t.Errorf("DesiredState(node %s, service %s) = %s, want %s", tc.node, tc.svc, got, tc.want)
		}
	}
}
