package testenv

import (
	"testing"
	"time"
)

func TestCheckGoroutinesFindsLeak(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	ft := &fakeTB{TB: t}
	CheckGoroutines(ft)
	go func() { <-stop }()
	ft.cleanup()
	if !ft.failed {
		t.Fatal("CheckGoroutines did not report a goroutine still running")
	}
}

func TestCheckGoroutinesWaits(t *testing.T) {
	ft := &fakeTB{TB: t}
	CheckGoroutines(ft)
	go func() { time.Sleep(50 * time.Millisecond) }()
	ft.cleanup()
	if ft.failed {
		t.Fatal("CheckGoroutines reported a goroutine that ended within the grace period")
	}
}

func TestPGBinDirFromEnv(t *testing.T) {
	t.Setenv("MOAT_PG_BINDIR", t.TempDir())
	if _, err := PGBinDir(); err == nil {
		t.Fatal("PGBinDir accepted a directory without initdb")
	}
}

// fakeTB collects cleanups and failures so the leak check can be tested.
type fakeTB struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (f *fakeTB) Cleanup(fn func())     { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(string, ...any) { f.failed = true }
func (f *fakeTB) Helper()               {}
func (f *fakeTB) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}
