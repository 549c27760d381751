package domain

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const hbTimeout = 15 * time.Second

func TestNewHost(t *testing.T) {
	cat := DefaultCatalog()
	others := []*Host{{Meta: Meta{ID: "host-old", Name: "taken", State: StateActive}}, {Meta: Meta{Name: "gone", State: StateDeleted}}}
	for _, tc := range []struct {
		name, host, region, az string
		capacity               int
		want                   *errSummary
		wantCap                int
	}{
		{"ok", "h1", "us-east-1", "us-east-1a", 4, nil, 4},
		{"default capacity", "h1", "us-east-1", "us-east-1b", 0, nil, DefaultHostCapacity},
		{"name of a removed host", "gone", "us-east-1", "us-east-1a", 1, nil, 1},
		{"bad name", "H_1", "us-east-1", "us-east-1a", 1, &errSummary{CodeInvalidName, "name", "use 1 to 63 lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen"}, 0},
		{"duplicate", "taken", "us-east-1", "us-east-1a", 1, &errSummary{CodeDuplicateEntry, "name", "choose another name, or remove host taken first"}, 0},
		{"unsupported region", "h1", "us-west-2", "us-west-2a", 1, &errSummary{CodeUnsupportedRegion, "region", "supported regions: us-east-1, eu-west-1"}, 0},
		{"AZ of another region", "h1", "us-east-1", "eu-west-1a", 1, &errSummary{CodeInvalidAZ, "az", "AZs of us-east-1: us-east-1a, us-east-1b, us-east-1c"}, 0},
		{"no AZ", "h1", "us-east-1", "", 1, &errSummary{CodeRequired, "az", "AZs of us-east-1: us-east-1a, us-east-1b, us-east-1c"}, 0},
		{"negative capacity", "h1", "us-east-1", "us-east-1a", -1, &errSummary{CodeInvalidCapacity, "capacity", "a host runs 1 to 1000 nodes"}, 0},
		{"huge capacity", "h1", "us-east-1", "us-east-1a", 1001, &errSummary{CodeInvalidCapacity, "capacity", "a host runs 1 to 1000 nodes"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHost(cat, tc.host, tc.region, tc.az, tc.capacity, others, t0)
			if diff := cmp.Diff(tc.want, summarize(err)); diff != "" {
				t.Fatalf("NewHost(%q, %q, %q, %d) error (-want +got):\n%s", tc.host, tc.region, tc.az, tc.capacity, diff)
			}
			if err != nil {
				return
			}
			if !ValidID(PrefixHost, h.ID) || h.State != StateActive || h.Capacity != tc.wantCap || h.Name != tc.host || h.AZ != tc.az {
				t.Errorf("NewHost = %+v", h)
			}
			if HostHealthy(h, t0, hbTimeout) {
				t.Errorf("a host that never heartbeat is healthy")
			}
		})
	}
}

func TestHostLifecycle(t *testing.T) {
	h, err := NewHost(DefaultCatalog(), "h1", "us-east-1", "us-east-1a", 2, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	step := func(what string, err error, wantState string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if h.State != wantState {
			t.Fatalf("%s: state %s, want %s", what, h.State, wantState)
		}
	}
	if !h.HeartbeatLate(t0.Add(hbTimeout+time.Second), hbTimeout) {
		t.Errorf("a host silent since registration is not late")
	}
	changed, err := h.Heartbeat("v1.2.3", t0)
	step("heartbeat", err, StateActive)
	if changed || !HostHealthy(h, t0.Add(hbTimeout), hbTimeout) || HostHealthy(h, t0.Add(hbTimeout+1), hbTimeout) || h.AgentVersion != "v1.2.3" {
		t.Errorf("after heartbeat: changed %v, %+v", changed, h)
	}
	if h.HeartbeatLate(t0.Add(hbTimeout), hbTimeout) || !h.HeartbeatLate(t0.Add(hbTimeout+1), hbTimeout) {
		t.Errorf("HeartbeatLate is not strict at the timeout")
	}
	// A control plane that started listening later gives the host the
	// timeout from then.
	restart := t0.Add(time.Hour)
	if h.HeartbeatLateSince(restart.Add(hbTimeout), hbTimeout, restart) || !h.HeartbeatLateSince(restart.Add(hbTimeout+1), hbTimeout, restart) ||
		!h.HeartbeatLateSince(t0.Add(hbTimeout+1), hbTimeout, t0.Add(-time.Hour)) {
		t.Errorf("HeartbeatLateSince does not count from the later of the heartbeat and the listening")
	}
	step("mark down", h.MarkDown(t1), StateDown)
	if h.StateInfo == nil || h.StateInfo.Code != CodeHeartbeatLost || h.Schedulable(t1, hbTimeout) || h.HeartbeatLate(t1.Add(time.Hour), hbTimeout) {
		t.Errorf("down host: %+v", h)
	}
	changed, err = h.Heartbeat("v1.2.4", t1)
	step("back", err, StateActive)
	if !changed || h.StateInfo != nil || !h.Schedulable(t1, hbTimeout) {
		t.Errorf("back: changed %v %+v", changed, h)
	}
	step("drain", h.Drain(t1), StateDraining)
	if h.Schedulable(t1, hbTimeout) || !HostHealthy(h, t1, hbTimeout) {
		t.Errorf("a draining host is schedulable or unhealthy")
	}
	step("down while draining", h.MarkDown(t1), StateDown)
	_, err = h.Heartbeat("v1.2.4", t1)
	step("a cordoned host comes back draining", err, StateDraining)
	step("activate", h.Activate(t1), StateActive)
	step("drain again", h.Drain(t1), StateDraining)
	step("drain is idempotent", h.Drain(t1), StateDraining)
	if _, err := h.Heartbeat("v1 2", t1); summarize(err) == nil || summarize(err).Code != CodeInvalidVersion {
		t.Errorf("Heartbeat with a space in the version = %v", err)
	}
	if err := h.SetCapacity(0, t1); summarize(err) == nil || summarize(err).Code != CodeInvalidCapacity {
		t.Errorf("SetCapacity(0) = %v", err)
	}
	step("set capacity", h.SetCapacity(5, t1), StateDraining)

	nodes := []*Node{
		{Meta: Meta{ID: "node-a", State: StateRunning}, Host: "h1"},
		{Meta: Meta{ID: "node-b", State: StateDeleted}, Host: "h1"},
		{Meta: Meta{ID: "node-c", State: StateRunning}, Host: "h2"},
	}
	err = h.Remove(nodes, t1)
	if diff := cmp.Diff(&errSummary{CodeInUse, "", "drain it first (moat host drain h1) and remove it once its nodes are replaced"}, summarize(err)); diff != "" {
		t.Errorf("Remove with a node (-want +got):\n%s", diff)
	}
	nodes[0].State = StateDeleting
	if err := h.Remove(nodes, t1); err == nil {
		t.Errorf("a live host removed while a node on it is still being wiped")
	}
	step("down", h.MarkDown(t1), StateDown)
	if got := h.AbandonedNodes(nodes); got != nil {
		t.Errorf("AbandonedNodes before removal = %v", got)
	}
	step("remove a down host whose nodes are deleting", h.Remove(nodes, t1), StateDeleted)
	if got := h.AbandonedNodes(nodes); len(got) != 1 || got[0].ID != "node-a" {
		t.Errorf("AbandonedNodes = %v, want node-a", got)
	}
	if _, err := h.Heartbeat("v1", t1); err == nil {
		t.Errorf("a removed host took a heartbeat")
	}
	if err := h.Drain(t1); err == nil {
		t.Errorf("a removed host was drained")
	}
}

func TestHostRemoveEmpty(t *testing.T) {
	h := &Host{Meta: Meta{Name: "h1", State: StateActive}}
	if err := h.Remove([]*Node{{Meta: Meta{ID: "node-x", State: StateRunning}, Host: "h2"}}, t1); err != nil || h.State != StateDeleted {
		t.Errorf("Remove(empty) = %v, state %s", err, h.State)
	}
}

func TestFenced(t *testing.T) {
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{{0, false}, {9 * time.Second, false}, {10 * time.Second, true}, {time.Hour, true}} {
		if got := Fenced(t0, 10*time.Second, t0.Add(tc.after)); got != tc.want {
			t.Errorf("Fenced(t0, 10s, t0+%v) = %v, want %v", tc.after, got, tc.want)
		}
	}
}
