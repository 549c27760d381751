package postgres

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/moatdb/moat/internal/netnstest"
)

// TestNamespace runs PostgreSQL inside a network namespace, as the agent
// does (Config.Exec = ip netns exec NS), manages it over its Unix socket
// from this namespace, and connects from a client namespace: an allowed
// source gets in over verified TLS, another is refused.
func TestNamespace(t *testing.T) {
	requirePostgres(t)
	netnstest.RequireRoot(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pair := netnstest.NewPair(t, 1)
	f := certs(t)
	cert, key, err := f.project.IssueServer([]string{"node-1.test", pair.ServerV4.String(), pair.ServerV6.String()}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, "netns", func(c *Config) {
		c.Exec = []string{"ip", "netns", "exec", pair.Server.Name}
		c.ListenAddresses = []netip.Addr{pair.ServerV4, pair.ServerV6}
		c.Port = 5432
		c.ServerCertPEM, c.ServerKeyPEM = cert, key
	})
	if err := in.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.WriteHBA(Policy{Allow: []netip.Prefix{netip.PrefixFrom(pair.ClientV4, 32), netip.PrefixFrom(pair.ClientV6, 128)}}); err != nil {
		t.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	const password = "netns-password"
	if err := in.SetPassword(ctx, AdminUser, password); err != nil {
		t.Fatal(err)
	}
	connect := func(src, dst netip.Addr) error {
		cfg, err := pgx.ParseConfig(clientDSN(t, in, dst.String(), AdminUser, password, f.project, "verify-full"))
		if err != nil {
			return err
		}
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return pair.Client.Dial(src, netip.AddrPortFrom(dst, 5432), 5*time.Second)
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var addr string
		if err := conn.QueryRow(ctx, "SELECT host(inet_client_addr())").Scan(&addr); err != nil {
			return err
		}
		if addr != src.String() {
			t.Errorf("server saw the client as %s, want %s", addr, src)
		}
		return nil
	}
	for _, src := range []netip.Addr{pair.ClientV4, pair.ClientV6} {
		dst := pair.ServerV4
		if src.Is6() {
			dst = pair.ServerV6
		}
		if err := connect(src, dst); err != nil {
			t.Errorf("connect from allowed %s: %v", src, err)
		}
	}
	err = connect(pair.ExtraV4[0], pair.ServerV4)
	want := `pg_hba.conf rejects connection for host "` + pair.ExtraV4[0].String() + `", user "moatadmin", database "defaultdb", SSL encryption`
	if pe := pgErr(err); pe == nil || pe.Code != "28000" || pe.Message != want {
		t.Errorf("connect from a source not allowed: %v, want SQLSTATE 28000 %q", err, want)
	}
}
