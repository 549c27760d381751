package ops

import (
	"crypto/rand"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/domain"
)

// FuzzSourceAddress: checkCert never admits a client from outside the
// certificate's source-address, whatever the option says. The oracle is
// the standard library's own CIDR parsing.
func FuzzSourceAddress(f *testing.F) {
	for _, seed := range []struct{ opt, remote string }{
		{"127.0.0.1/32", "127.0.0.1"},
		{"10.0.0.0/8,192.0.2.7", "192.0.2.7"},
		{"10.0.0.1/8", "10.200.0.1"},
		{"::1/128", "::1"},
		{"::ffff:10.0.0.0/104", "10.0.0.1"},
		{"", "127.0.0.1"},
		{"0.0.0.0/0", "203.0.113.9"},
		{" 10.0.0.0/8 , fe80::/10", "fe80::1"},
	} {
		f.Add(seed.opt, seed.remote)
	}
	ca, err := NewCA()
	if err != nil {
		f.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, opt, remote string) {
		ip, err := netip.ParseAddr(remote)
		if err != nil || ip.Zone() != "" {
			return
		}
		c := &ssh.Certificate{
			Key: key.PublicKey(), Serial: 1, CertType: ssh.UserCert, KeyId: domain.PrefixOpsGrant + "aaaaaaaaaaaaaaaa",
			ValidPrincipals: []string{domain.OpsPrincipal},
			ValidAfter:      uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Minute).Unix()),
			Permissions: ssh.Permissions{CriticalOptions: map[string]string{"source-address": opt}},
		}
		if err := c.SignCert(rand.Reader, ca.Signer); err != nil {
			t.Fatal(err)
		}
		addr := &net.TCPAddr{IP: ip.AsSlice(), Port: 2222}
		if _, r := checkCert(c, domain.OpsPrincipal, addr, now, ca.PublicKey()); r == nil && !oracleAllows(opt, ip) {
			t.Fatalf("source-address %q admitted %s", opt, ip)
		}
	})
}

// oracleAllows matches ip against a source-address list with package net.
func oracleAllows(opt string, ip netip.Addr) bool {
	target := net.IP(ip.Unmap().AsSlice())
	for _, s := range strings.Split(opt, ",") {
		s = strings.TrimSpace(s)
		if _, n, err := net.ParseCIDR(s); err == nil && n.Contains(target) {
			return true
		}
		if a := net.ParseIP(s); a != nil && a.Equal(target) {
			return true
		}
	}
	return false
}
