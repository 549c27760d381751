package domain

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want LSN
		ok   bool
	}{
		{"0/0", 0, true},
		{"16/B374D848", 0x16_B374D848, true},
		{"FFFFFFFF/FFFFFFFF", 1<<64 - 1, true},
		{"16B374D848", 0, false},
		{"/1", 0, false},
		{"1/", 0, false},
		{"1/100000000", 0, false},
		{"x/1", 0, false},
	} {
		got, err := ParseLSN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLSN(%q) = %v, %v, want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("ParseLSN(%q).String() = %q", tc.in, got.String())
		}
	}
}

// member is a node of service svc-1 with a report; primary reports its
// flush position in ReceivedLSN.
func member(id string, primary, healthy bool, r *ReplicationReport) Member {
	return Member{Node: &Node{Meta: Meta{ID: id, State: StateRunning}, ServiceID: "svc-1", Host: "host-of-" + id, AZ: "az-of-" + id}, Primary: primary, HostHealthy: healthy, Report: r}
}

func primaryReport(flush LSN, standbys ...StandbyStatus) *ReplicationReport {
	return &ReplicationReport{At: t1, Up: true, ReceivedLSN: flush, Standbys: standbys}
}

func replicaReport(upstream string, streaming bool, received LSN) *ReplicationReport {
	return &ReplicationReport{At: t1, Up: true, InRecovery: true, Upstream: upstream, Streaming: streaming, ReceivedLSN: received, ReplayedLSN: received}
}

func TestSyncStandbyNames(t *testing.T) {
	svc := func(n int) *Service { return &Service{Meta: Meta{ID: "svc-1"}, NodeCount: n} }
	p := member("node-p", true, true, primaryReport(100<<20))
	creating := member("node-c", false, true, nil)
	creating.Node.State = StateCreating
	deleting := member("node-d", false, true, replicaReport("node-p", true, 100<<20))
	deleting.Node.State = StateDeleting
	lost := member("node-b", false, false, replicaReport("node-p", true, 99<<20))
	for _, tc := range []struct {
		name    string
		svc     *Service
		members []Member
		want    SyncSetting
	}{
		{"one node", svc(1), []Member{p}, SyncSetting{Mode: ReplNone}},
		{"three nodes: quorum", svc(3), []Member{p, member("node-b", false, true, replicaReport("node-p", true, 0)), member("node-a", false, true, nil)},
			SyncSetting{StandbyNames: `ANY 1 ("node-a", "node-b")`, Mode: ReplQuorum}},
		{"three nodes: a lost replica stays listed, creating and deleting ones do not", svc(3), []Member{p, lost, creating, deleting},
			SyncSetting{StandbyNames: `ANY 1 ("node-b")`, Mode: ReplQuorum}},
		{"three nodes, replicas being created", svc(3), []Member{p, creating},
			SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp, Message: "replication asynchronous: the replicas are still being created"}}},
		{"two nodes: synchronous", svc(2), []Member{p, member("node-b", false, true, replicaReport("node-p", true, 99<<20))},
			SyncSetting{StandbyNames: `FIRST 1 ("node-b")`, Mode: ReplSync}},
		{"two nodes: replica lost", svc(2), []Member{p, lost},
			SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaLost, Message: "replication asynchronous: replica lost"}}},
		// Alive but not streaming (just started, or re-pointed): not lost.
		{"two nodes: replica not streaming", svc(2), []Member{p, member("node-b", false, true, replicaReport("node-p", false, 100<<20))},
			SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp, Message: "replication asynchronous: the replica is catching up"}}},
		{"two nodes: replica down", svc(2), []Member{p, member("node-b", false, true, &ReplicationReport{At: t1, DownSince: t1})},
			SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaLost, Message: "replication asynchronous: replica lost"}}},
		{"two nodes: replica catching up", svc(2), []Member{p, member("node-b", false, true, replicaReport("node-p", true, 1<<20))},
			SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp, Message: "replication asynchronous: the replica is catching up"}}},
		{"two nodes: replica follows another node", svc(2), []Member{p, member("node-b", false, true, replicaReport("node-x", true, 100<<20))},
			SyncSetting{Mode: ReplAsync, Condition: &Info{Code: CodeReplicaCatchingUp, Message: "replication asynchronous: the replica is catching up"}}},
		{"no primary", svc(3), []Member{lost}, SyncSetting{Mode: ReplNone}},
		{"a retiring replica is released", svc(2), []Member{p, {Node: &Node{Meta: Meta{ID: "node-old", State: StateRunning}}, HostHealthy: true, Retiring: true, Report: replicaReport("node-p", true, 100<<20)},
			member("node-new", false, true, replicaReport("node-p", true, 100<<20))},
			SyncSetting{StandbyNames: `FIRST 1 ("node-new")`, Mode: ReplSync}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, SyncStandbyNames(tc.svc, tc.members)); diff != "" {
				t.Errorf("SyncStandbyNames (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplicaStates(t *testing.T) {
	p := member("node-p", true, true, primaryReport(100, StandbyStatus{Name: "node-b", SyncState: SyncStateQuorum}, StandbyStatus{Name: "node-a", SyncState: SyncStateQuorum}))
	a := member("node-a", false, true, replicaReport("node-p", true, 100))
	a.Report.ReplayedLSN = 60
	b := member("node-b", false, false, replicaReport("node-p", true, 100))
	got := ReplicaStates([]Member{b, p, a})
	want := []ReplicaState{{NodeID: "node-a", Streaming: true, SyncState: SyncStateQuorum, LagBytes: 40}, {NodeID: "node-b", SyncState: SyncStateQuorum}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReplicaStates (-want +got):\n%s", diff)
	}
}
