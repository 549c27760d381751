package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/provider"
	"github.com/moatdb/moat/internal/reconcile"
	"github.com/moatdb/moat/internal/secret"
	"github.com/moatdb/moat/internal/store"
	"github.com/moatdb/moat/internal/store/sqlitestore"
)

// fakeCloud is a provider whose networks are maps: the tests set what the
// "tenant" did to a request and see what the controllers asked for.
type fakeCloud struct {
	mu       sync.Mutex
	vpcs     map[string]netip.Prefix
	refuse   map[string]bool // VPC IDs whose creation is refused
	peerings map[string]*provider.PeeringStatus
	routes   map[string][]netip.Prefix // by cloud peering ID
	requests map[string]int            // RequestPeering calls by cloud ID
	// requestErr fails the next RequestPeering after recording it, as
	// if the server died before the answer came back.
	requestErr error
	// onRequest is the state a new request takes (pending-acceptance
	// unless set, with reason when failed).
	onRequest provider.PeeringStatus
	ids       int
}

func newFake() *fakeCloud {
	return &fakeCloud{vpcs: map[string]netip.Prefix{}, refuse: map[string]bool{},
		peerings: map[string]*provider.PeeringStatus{}, routes: map[string][]netip.Prefix{}, requests: map[string]int{}}
}

func (f *fakeCloud) PlaceNode(context.Context, provider.NodeRequest) (provider.Placement, error) {
	return provider.Placement{}, errors.New("no nodes here")
}
func (f *fakeCloud) RemoveNode(context.Context, string) error { return nil }

func (f *fakeCloud) EnsureVPC(_ context.Context, req provider.VPCRequest) (provider.VPCPlacement, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse[req.ID] {
		return provider.VPCPlacement{}, fmt.Errorf("vpc %s: %w", req.ID, provider.ErrRefused)
	}
	f.vpcs[req.ID] = req.CIDR
	return provider.VPCPlacement{CloudVPCID: "router-" + req.ID}, nil
}

func (f *fakeCloud) RemoveVPC(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.vpcs, id)
	return nil
}

func (f *fakeCloud) NewPeeringID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids++
	return fmt.Sprintf("pcx-%017x", f.ids)
}

func (f *fakeCloud) RequestPeering(_ context.Context, req provider.PeeringRequest) (provider.PeeringStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests[req.CloudID]++
	st, ok := f.peerings[req.CloudID]
	if !ok {
		st = &provider.PeeringStatus{CloudID: req.CloudID, State: provider.PeeringPendingAcceptance,
			ExpiresAt: time.Date(2030, 1, 8, 0, 0, 0, 0, time.UTC)}
		if f.onRequest.State != "" {
			st.State, st.Code, st.Reason = f.onRequest.State, f.onRequest.Code, f.onRequest.Reason
		}
		f.peerings[req.CloudID] = st
	}
	if err := f.requestErr; err != nil {
		f.requestErr = nil
		return provider.PeeringStatus{}, err
	}
	return *st, nil
}

func (f *fakeCloud) PeeringStatus(_ context.Context, id string) (provider.PeeringStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.peerings[id]
	if !ok {
		return provider.PeeringStatus{}, fmt.Errorf("%s: %w", id, provider.ErrNotFound)
	}
	return *st, nil
}

func (f *fakeCloud) AddPeeringRoutes(_ context.Context, vpcID, id string, cidrs []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.peerings[id]; !ok || st.State != provider.PeeringActive {
		return fmt.Errorf("add routes: %s is not active", id)
	}
	f.routes[id] = slices.Clone(cidrs)
	return nil
}

func (f *fakeCloud) DeletePeering(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.peerings[id]; ok && (st.State == provider.PeeringActive || st.State == provider.PeeringPendingAcceptance) {
		st.State = provider.PeeringDeleted
	}
	delete(f.routes, id)
	return nil
}

// set moves cloud peering id to state (the tenant accepted, say).
func (f *fakeCloud) set(id, state, code, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.peerings[id]
	st.State, st.Code, st.Reason = state, code, reason
}

type fixture struct {
	t     *testing.T
	store store.Store
	cloud *fakeCloud
	rec   *reconcile.Reconciler
	vpc   *domain.VPC
	// keys and ca make another reconciler on the same store.
	keys *secret.Keyring
	ca   *pki.CA
}

func newFixture(t *testing.T, resync time.Duration) *fixture {
	t.Helper()
	return newFixtureWith(t, func(c *reconcile.Config) { c.Resync = resync })
}

// newFixtureWith is newFixture with the reconciler's configuration
// adjusted by configure.
func newFixtureWith(t *testing.T, configure func(*reconcile.Config)) *fixture {
	t.Helper()
	ctx := t.Context()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "moat.db"), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := secret.NewKeyring(make([]byte, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("test internal CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: st, cloud: newFake(), keys: keys, ca: ca}
	cfg := reconcile.Config{Store: st, Provider: f.cloud, Keys: keys, InternalCA: ca}
	configure(&cfg)
	f.rec, err = reconcile.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.vpc = f.put(&domain.VPC{Meta: domain.Meta{ID: domain.NewID(domain.PrefixVPC), ProjectID: "proj-test", State: domain.StateActive},
		Region: "us-east-1", CIDR: "10.0.0.0/17", CloudVPCID: "router-x"}).(*domain.VPC)
	return f
}

func (f *fixture) put(o domain.Object) domain.Object {
	f.t.Helper()
	err := f.store.Update(f.t.Context(), func(tx store.Tx) error {
		if err := store.Put(f.t.Context(), tx, o); err != nil {
			return err
		}
		_, err := tx.BumpRevision(f.t.Context())
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

func (f *fixture) newPeering(cidrs ...string) *domain.Peering {
	return f.put(&domain.Peering{Meta: domain.Meta{ID: domain.NewID(domain.PrefixPeering), ProjectID: "proj-test",
		State: domain.StateProvisioning, UpdatedAt: time.Now()},
		VPCID: f.vpc.ID, PeerAccountID: "123456789012", PeerVPCID: "vpc-0123456789abcdef0", PeerRegion: "eu-west-1",
		PeerCIDRs: cidrs}).(*domain.Peering)
}

func (f *fixture) once() error { return f.rec.Once(f.t.Context()) }

func (f *fixture) mustOnce() {
	f.t.Helper()
	if err := f.once(); err != nil {
		f.t.Fatalf("Once: %v", err)
	}
}

func get[T any, P store.Ptr[T]](f *fixture, id string) P {
	f.t.Helper()
	var out P
	err := f.store.View(f.t.Context(), func(tx store.Tx) (err error) {
		out, err = store.Get[T, P](f.t.Context(), tx, id)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) peering(id string) *domain.Peering { return get[domain.Peering](f, id) }

func (f *fixture) revision() int64 {
	f.t.Helper()
	rev, err := f.store.Revision(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return rev
}

func TestVPCLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	v := f.put(&domain.VPC{Meta: domain.Meta{ID: domain.NewID(domain.PrefixVPC), ProjectID: "proj-test", State: domain.StateCreating},
		Region: "us-east-1", CIDR: "10.1.0.0/16"}).(*domain.VPC)
	bad := f.put(&domain.VPC{Meta: domain.Meta{ID: domain.NewID(domain.PrefixVPC), ProjectID: "proj-test", State: domain.StateCreating},
		Region: "us-east-1", CIDR: "10.2.0.0/16"}).(*domain.VPC)
	f.cloud.refuse[bad.ID] = true
	f.mustOnce()

	got := get[domain.VPC](f, v.ID)
	if got.State != domain.StateActive || got.CloudVPCID != "router-"+v.ID || got.StateInfo != nil {
		t.Errorf("after a pass: state %s, cloud_vpc_id %q, info %v; want active, %q, none", got.State, got.CloudVPCID, got.StateInfo, "router-"+v.ID)
	}
	if c := f.cloud.vpcs[v.ID]; c != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("cloud VPC CIDR = %v, want 10.1.0.0/16", c)
	}
	gotBad := get[domain.VPC](f, bad.ID)
	if gotBad.State != domain.StateFailed || gotBad.StateInfo == nil || gotBad.StateInfo.Code != "vpc_refused" {
		t.Errorf("refused VPC: state %s, info %+v; want failed with vpc_refused", gotBad.State, gotBad.StateInfo)
	}

	got.State = domain.StateDeleting
	f.put(got)
	f.mustOnce()
	if got := get[domain.VPC](f, v.ID); got.State != domain.StateDeleted {
		t.Errorf("deleting VPC after a pass: %s, want deleted", got.State)
	}
	if _, ok := f.cloud.vpcs[v.ID]; ok {
		t.Error("the cloud still has the deleted VPC")
	}
}

// TestPeeringCloudIDSurvivesCrash: the cloud ID is recorded before the
// request is sent, so a pass that dies after sending repeats the same
// request instead of making a second one.
func TestPeeringCloudIDSurvivesCrash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	p := f.newPeering("172.31.0.0/16")
	f.cloud.requestErr = errors.New("connection reset")
	if err := f.once(); err == nil {
		t.Fatal("Once after a failed request: no error")
	}
	got := f.peering(p.ID)
	if got.State != domain.StateProvisioning || got.CloudPeeringID == "" {
		t.Fatalf("after the failed request: state %s, cloud_peering_id %q; want provisioning with an ID", got.State, got.CloudPeeringID)
	}
	cloudID := got.CloudPeeringID
	f.mustOnce()
	got = f.peering(p.ID)
	if got.State != domain.StatePendingAcceptance || got.CloudPeeringID != cloudID {
		t.Errorf("after retry: state %s, cloud_peering_id %q; want pending-acceptance, %q", got.State, got.CloudPeeringID, cloudID)
	}
	if want := map[string]int{cloudID: 2}; !cmp.Equal(f.cloud.requests, want) {
		t.Errorf("requests = %v, want %v (one connection, asked twice)", f.cloud.requests, want)
	}
	if !got.ExpiresAt.Equal(time.Date(2030, 1, 8, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("expires_at = %v, want the cloud's expiry", got.ExpiresAt)
	}
}

func TestPeeringLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	p := f.newPeering("172.31.0.0/16", "192.168.8.0/24")
	f.mustOnce()
	got := f.peering(p.ID)
	if got.State != domain.StatePendingAcceptance {
		t.Fatalf("after the request: %s, want pending-acceptance", got.State)
	}
	f.mustOnce() // still pending: nothing changes
	if again := f.peering(p.ID); again.Revision != got.Revision {
		t.Errorf("a pass over an unchanged pending peering wrote it (revision %d → %d)", got.Revision, again.Revision)
	}

	f.cloud.set(got.CloudPeeringID, provider.PeeringActive, "", "")
	rev := f.revision()
	f.mustOnce()
	got = f.peering(p.ID)
	if got.State != domain.StateActive || got.StateInfo != nil {
		t.Fatalf("after acceptance: %s %+v, want active", got.State, got.StateInfo)
	}
	want := []netip.Prefix{netip.MustParsePrefix("172.31.0.0/16"), netip.MustParsePrefix("192.168.8.0/24")}
	if diff := cmp.Diff(want, f.cloud.routes[got.CloudPeeringID], cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("provider routes (-want +got):\n%s", diff)
	}
	if f.revision() <= rev {
		t.Error("activation did not bump the desired-state revision")
	}

	got.State = domain.StateDeleting
	f.put(got)
	rev = f.revision()
	f.mustOnce()
	got = f.peering(p.ID)
	if got.State != domain.StateDeleted {
		t.Errorf("after delete: %s, want deleted", got.State)
	}
	if r, ok := f.cloud.routes[got.CloudPeeringID]; ok {
		t.Errorf("routes left after delete: %v", r)
	}
	if f.revision() <= rev {
		t.Error("deletion did not bump the desired-state revision")
	}
}

// TestPeeringVerdicts: what the cloud decides becomes the peering's state
// with its reason in state_info.
func TestPeeringVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		onRequest provider.PeeringStatus  // the cloud's answer to the request
		later     *provider.PeeringStatus // then, the tenant's or clock's doing
		fromActv  bool                    // later happens after acceptance
		want      string                  // resulting state
		wantInfo  *domain.Info            // resulting state_info
	}{
		{name: "unknown account", onRequest: provider.PeeringStatus{State: provider.PeeringFailed, Code: "peer_vpc_not_found", Reason: "VPC v does not exist in account a"},
			want: domain.StateFailed, wantInfo: &domain.Info{Code: "peer_vpc_not_found", Message: "VPC v does not exist in account a"}},
		{name: "overlap", onRequest: provider.PeeringStatus{State: provider.PeeringFailed, Code: "overlapping_cidrs", Reason: "overlapping CIDRs: x and y"},
			want: domain.StateFailed, wantInfo: &domain.Info{Code: "overlapping_cidrs", Message: "overlapping CIDRs: x and y"}},
		{name: "rejected", later: &provider.PeeringStatus{State: provider.PeeringRejected, Code: "rejected", Reason: "rejected by account a"},
			want: domain.StateRejected, wantInfo: &domain.Info{Code: "rejected", Message: "rejected by account a"}},
		{name: "expired", later: &provider.PeeringStatus{State: provider.PeeringExpired, Code: "expired", Reason: "not accepted by t"},
			want: domain.StateExpired, wantInfo: &domain.Info{Code: "expired", Message: "not accepted by t"}},
		{name: "declared cidrs mismatch", later: &provider.PeeringStatus{State: provider.PeeringFailed, Code: "peer_cidrs_mismatch", Reason: "declared peer CIDRs z are not inside"},
			want: domain.StateFailed, wantInfo: &domain.Info{Code: "peer_cidrs_mismatch", Message: "declared peer CIDRs z are not inside"}},
		{name: "deleted by peer while pending", later: &provider.PeeringStatus{State: provider.PeeringDeleted, Code: "deleted_by_peer", Reason: "gone"},
			want: domain.StateFailed, wantInfo: &domain.Info{Code: "deleted_by_peer", Message: "gone"}},
		{name: "deleted by peer while active", fromActv: true, later: &provider.PeeringStatus{State: provider.PeeringDeleted, Code: "deleted_by_peer", Reason: "gone"},
			want: domain.StateFailed, wantInfo: &domain.Info{Code: "deleted_by_peer", Message: "gone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 0)
			f.cloud.onRequest = tt.onRequest
			p := f.newPeering("172.31.0.0/16")
			f.mustOnce()
			cloudID := f.peering(p.ID).CloudPeeringID
			if tt.fromActv {
				f.cloud.set(cloudID, provider.PeeringActive, "", "")
				f.mustOnce()
			}
			if tt.later != nil {
				f.cloud.set(cloudID, tt.later.State, tt.later.Code, tt.later.Reason)
				f.mustOnce()
			}
			got := f.peering(p.ID)
			if got.State != tt.want || !cmp.Equal(got.StateInfo, tt.wantInfo) {
				t.Errorf("state %s %+v, want %s %+v", got.State, got.StateInfo, tt.want, tt.wantInfo)
			}
			// Every terminal verdict can still be deleted.
			got.State = domain.StateDeleting
			f.put(got)
			f.mustOnce()
			if got := f.peering(p.ID); got.State != domain.StateDeleted {
				t.Errorf("after delete: %s, want deleted", got.State)
			}
		})
	}
}

// TestPeeringLost: a pending request the cloud forgot fails with a reason.
func TestPeeringLost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 0)
	p := f.newPeering("172.31.0.0/16")
	f.mustOnce()
	f.cloud.mu.Lock()
	clear(f.cloud.peerings)
	f.cloud.mu.Unlock()
	f.mustOnce()
	if got := f.peering(p.ID); got.State != domain.StateFailed || got.StateInfo == nil || got.StateInfo.Code != "peering_lost" {
		t.Errorf("state %s %+v, want failed with peering_lost", got.State, got.StateInfo)
	}
}

// TestPendingPolledQuickly: Run notices an acceptance well before the next
// Resync.
func TestPendingPolledQuickly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, time.Minute)
	p := f.newPeering("172.31.0.0/16")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.rec.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitState := func(want string) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 5*time.Second {
			if f.peering(p.ID).State == want {
				return time.Since(start)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("peering did not become %s in 5s (Resync is a minute)", want)
		return 0
	}
	waitState(domain.StatePendingAcceptance)
	f.cloud.set(f.peering(p.ID).CloudPeeringID, provider.PeeringActive, "", "")
	if d := waitState(domain.StateActive); d > 2*time.Second {
		t.Errorf("acceptance noticed after %v", d)
	}
}
