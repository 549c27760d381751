package nft

import (
	"sync"
	"testing"
)

// TestConcurrentApply writes firewalls into several namespaces at once;
// under -race it catches shared state in the nftables library (its set-ID
// counter) that Apply must guard.
func TestConcurrentApply(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 3 {
		n := newNS(t)
		fw := newFirewall(t, n.Handle)
		wg.Go(func() {
			for j := range 4 {
				p := bigPolicy(500, 50, i+j)
				if err := fw.Apply(p); err != nil {
					t.Errorf("ns %d: Apply #%d: %v", i, j, err)
					return
				}
				if err := Apply(n.Handle, p); err != nil {
					t.Errorf("ns %d: full Apply #%d: %v", i, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
