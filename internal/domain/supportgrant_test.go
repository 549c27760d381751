package domain

import (
	"testing"
	"time"
)

// TestSupportGrantLifetime: the lifetime a tenant may ask for, the
// minimum a configuration may lower, and the grant's state over time.
func TestSupportGrantLifetime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		ttl, min time.Duration
		want     time.Duration // 0: refused
	}{
		{0, 0, DefaultSupportTTL},
		{time.Minute, 0, time.Minute},
		{59 * time.Second, 0, 0},
		{MaxSupportTTL, 0, MaxSupportTTL},
		{MaxSupportTTL + time.Second, 0, 0},
		{5 * time.Second, 5 * time.Second, 5 * time.Second},
		{4 * time.Second, 5 * time.Second, 0},
		{MaxSupportTTL + time.Second, time.Second, 0},
	} {
		g, err := NewSupportGrant("prj-aaaaaaaaaaaaaaaa", "tok-aaaaaaaaaaaaaaaa", "ticket 77: slow queries", tc.ttl, tc.min, now)
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("NewSupportGrant(ttl %s, min %s) = %s, want refused", tc.ttl, tc.min, g.ExpiresAt.Sub(now))
		case tc.want != 0 && err != nil:
			t.Errorf("NewSupportGrant(ttl %s, min %s): %v", tc.ttl, tc.min, err)
		case tc.want != 0 && g.ExpiresAt.Sub(now) != tc.want:
			t.Errorf("NewSupportGrant(ttl %s, min %s) lasts %s, want %s", tc.ttl, tc.min, g.ExpiresAt.Sub(now), tc.want)
		}
	}
	g, err := NewSupportGrant("prj-aaaaaaaaaaaaaaaa", "tok-aaaaaaaaaaaaaaaa", "ticket 77: slow queries", 5*time.Second, time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []struct {
		d    time.Duration
		want string
	}{{0, StateActive}, {5*time.Second - time.Nanosecond, StateActive}, {5 * time.Second, StateExpired}} {
		if got := g.StateAt(now.Add(at.d)); got != at.want {
			t.Errorf("StateAt(+%s) = %s, want %s", at.d, got, at.want)
		}
	}
	if ActiveSupportGrant([]*SupportGrant{g}, now.Add(5*time.Second)) != nil {
		t.Error("an expired support grant is active")
	}
	if err := g.Revoke(now.Add(5 * time.Second)); err == nil {
		t.Error("an expired support grant was revoked")
	}
}
