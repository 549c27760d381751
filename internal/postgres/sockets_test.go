package postgres

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestParseProcAddr(t *testing.T) {
	for _, c := range []struct {
		in   string
		addr string
		port int
	}{
		{"0100007F:1538", "127.0.0.1", 5432},
		{"00000000:0000", "0.0.0.0", 0},
		{"00000000000000000000000001000000:1538", "::1", 5432},
		{"0000000000000000FFFF00000100007F:E0C1", "127.0.0.1", 57537},
		{"B80D0120000000000000000001000000:0016", "2001:db8::1", 22},
	} {
		a, p, err := parseProcAddr(c.in)
		if err != nil || a != netip.MustParseAddr(c.addr) || p != c.port {
			t.Errorf("parseProcAddr(%q) = %v, %d, %v, want %s, %d", c.in, a, p, err, c.addr, c.port)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007:1538", "zz00007F:1538", "0100007F:fffff"} {
		if a, p, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) = %v, %d, want an error", bad, a, p)
		}
	}
}

// TestTerminateSessionsByLocalAddress: a session that came in on an
// address the node no longer has is ended though its source is allowed;
// one on a current address stays.
func TestTerminateSessionsByLocalAddress(t *testing.T) {
	requirePostgres(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := certs(t)
	in, password := primary(t, ctx, "local-addr", nil)
	old, err := pgx.Connect(ctx, clientDSN(t, in, "127.0.0.1", AdminUser, password, f.project, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(ctx)
	cur, err := pgx.Connect(ctx, clientDSN(t, in, "::1", AdminUser, password, f.project, "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	for _, c := range []*pgx.Conn{old, cur} {
		if _, err := c.Exec(ctx, "BEGIN"); err != nil { // idle in transaction
			t.Fatal(err)
		}
	}
	n, err := in.TerminateSessions(ctx, Access{Allowed: prefixes("0.0.0.0/0", "::/0"), Local: []netip.Addr{netip.MustParseAddr("::1")}})
	if err != nil || n != 1 {
		t.Fatalf("TerminateSessions = %d, %v, want 1", n, err)
	}
	if _, err := old.Exec(ctx, "SELECT 1"); pgErr(err) == nil || pgErr(err).Code != "57P01" {
		t.Errorf("query on the session to the old address: %v, want SQLSTATE 57P01", err)
	}
	if _, err := cur.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("query on the session to a current address: %v", err)
	}
}
