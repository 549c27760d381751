package reconcile_test

import (
	"testing"
	"time"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/pki"
	"github.com/moatdb/moat/internal/reconcile"
)

// TestReplCertNamesTheNode: a node whose replication certificate names
// the role (as all did before) gets one naming the node, though its
// server certificate is far from expiring.
func TestReplCertNamesTheNode(t *testing.T) {
	f := newFixtureWith(t, func(c *reconcile.Config) { c.Resync, c.Zone = 1, "moat.test" })
	f.projectCA()
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning}, Region: "us-east-1", NodeCount: 1}).(*domain.Service)
	ca, err := pki.NewCA("some CA", 400*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	server, _, err := ca.IssueServer([]string{"n.test"}, 40*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := ca.IssueClient(domain.ReplicationUser, 40*24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := domain.NewNode(svc, 0, "a", time.Now())
	n.State, n.Address, n.CertPEM, n.ReplCertPEM = domain.StateRunning, "198.18.0.5", string(server), string(old)
	f.put(n)
	f.mustOnce()
	got := get[domain.Node](f, n.ID)
	c, err := pki.ParseCert([]byte(got.ReplCertPEM))
	if err != nil {
		t.Fatalf("node %s's replication certificate: %v", n.ID, err)
	}
	if c.Subject.CommonName != n.ID {
		t.Errorf("replication certificate CN = %q, want the node ID %q", c.Subject.CommonName, n.ID)
	}
}
