package reconcile_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/reconcile"
	"github.com/moatdb/moat/internal/secret"
)

// brokenNetwork is a fake cloud whose nodes cannot join another network.
type brokenNetwork struct{ *fakeCloud }

var errNoInterface = errors.New("netlink: add veth moat-n-x: file exists")

func (brokenNetwork) AddNodeInterface(context.Context, string, string) (netip.Addr, error) {
	return netip.Addr{}, errNoInterface
}
func (brokenNetwork) UseNetwork(context.Context, string, string) error          { return nil }
func (brokenNetwork) RemoveNodeInterface(context.Context, string, string) error { return nil }
func (brokenNetwork) HoldAddress(context.Context, netip.Addr, string, string, *tls.Certificate) error {
	return nil
}
func (brokenNetwork) ReleaseAddress(context.Context, netip.Addr) error { return nil }

// TestPassJoinsEveryError: a pass in which several objects fail returns
// every failure, not the first only.
func TestPassJoinsEveryError(t *testing.T) {
	f := newFixture(t, 0)
	var ids []string
	for i := range 2 {
		svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateCreating}, Region: "us-east-1", NodeCount: 2}).(*domain.Service)
		n := f.put(onHost(domain.NewNode(svc, i, "a", time.Now()))).(*domain.Node)
		ids = append(ids, n.ID)
	}
	err := f.once()
	if err == nil {
		t.Fatal("Once = nil, want the placement failures")
	}
	for _, id := range ids {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("Once = %v, want the failure of node %s among the errors", err, id)
		}
	}
	for _, id := range ids {
		if n := get[domain.Node](f, id); n.StateInfo == nil || n.StateInfo.Code != "placement_failed" || !strings.Contains(n.StateInfo.Cause, "no nodes here") {
			t.Errorf("node %s state info = %+v, want placement_failed with the provider's error as the cause", id, n.StateInfo)
		}
	}
}

// TestAttachKeepsTheCause: a node that cannot join the destination network
// fails the attach with a public message, and the provider's error as the
// operation's internal cause; the service runs on where it was.
func TestAttachKeepsTheCause(t *testing.T) {
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Provider, c.Zone = brokenNetwork{c.Provider.(*fakeCloud)}, "moat.test" })
	f.projectCA()
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning}, Region: "us-east-1", NodeCount: 1}).(*domain.Service)
	n := onHost(domain.NewNode(svc, 0, "a", time.Now()))
	n.State, n.Address = domain.StateRunning, "198.18.0.5"
	f.put(n)
	op := domain.NewOperation("proj-test", domain.OpServiceAttach, svc.ID, time.Now())
	op.VPCID = f.vpc.ID
	f.edit(svc, func() { svc.State, svc.OperationID = domain.StateMigrating, op.ID })
	f.put(op)
	f.mustOnce() // pending → running
	f.mustOnce() // add-network fails: handled
	got := get[domain.Operation](f, op.ID)
	if got.State != domain.StateFailed || got.Error == nil || got.Error.Code != "network_failed" {
		t.Fatalf("attach = %s %+v, want failed with network_failed", got.State, got.Error)
	}
	if strings.Contains(got.Error.Message, "netlink") || !strings.Contains(got.Error.Cause, errNoInterface.Error()) {
		t.Errorf("attach error = %+v, want a public message and the provider's error as the cause", got.Error)
	}
	if s := get[domain.Service](f, svc.ID); s.State != domain.StateRunning || s.OperationID != "" || s.VPCID != "" {
		t.Errorf("service after the failed attach = %s %q vpc %q, want running where it was", s.State, s.OperationID, s.VPCID)
	}
}

// projectCA stores project proj-test with a CA whose key is sealed the way
// the fixture's reconciler opens it (its keyring has the zero key).
func (f *fixture) projectCA() {
	f.t.Helper()
	keys, err := secret.NewKeyring(make([]byte, secret.KeySize))
	if err != nil {
		f.t.Fatal(err)
	}
	ca, err := pki.NewCA("test project CA", time.Hour, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	key, err := ca.MarshalKeyPEM()
	if err != nil {
		f.t.Fatal(err)
	}
	f.put(&domain.Project{Meta: domain.Meta{ID: "proj-test", State: domain.StateActive}, CACertPEM: string(ca.CertPEM),
		CAKeySealed: keys.Seal(key, domain.ProjectCAKeyAD("proj-test"))})
}

// onHost gives n the host the API's placement would have chosen.
func onHost(n *domain.Node) *domain.Node {
	n.Host = "h1"
	return n
}
