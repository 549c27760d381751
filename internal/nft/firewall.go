package nft

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netns"
)

// ErrNotFound is returned by Current when the namespace has no Moat table.
var ErrNotFound = errors.New("firewall table not found")

// ErrMismatch is returned (wrapped) when the sets read back after a
// transaction differ from the ones written. The table is then locked down
// (see Apply).
var ErrMismatch = errors.New("firewall sets read back differ from the policy")

// ErrClosed is returned by Firewall.Apply after Close.
var ErrClosed = errors.New("firewall closed")

// nsTable is the Moat table of one namespace as this package reaches it:
// the sockets, the committer every transaction goes through, and the
// retry schedule for transient failures (retry.go). write.go writes whole
// tables, delta.go the changed elements, verify.go reads the table back
// and compares.
type nsTable struct {
	socks   *sockets
	commit  committer
	backoff backoff

	// retries counts the transient failures retried; fallbacks the
	// incremental applies whose spot checks got no usable answer and
	// were verified by a full read-back instead. Tests read them.
	retries, fallbacks atomic.Int64
}

func newNSTable(ns netns.NsHandle) *nsTable {
	socks := &sockets{ns: ns}
	return &nsTable{socks: socks, commit: netlinkCommitter{socks}, backoff: defaultBackoff()}
}

func (t *nsTable) retried(error) { t.retries.Add(1) }

// Apply replaces the Moat table in the network namespace ns with the
// ruleset for p, in one netlink transaction: the kernel switches from the
// old ruleset to the new one at commit, with no moment in between, and
// keeps the old one whole if the transaction fails. It then reads the sets
// back; if they differ from p, it replaces the table with a locked-down one
// (empty sets: nothing but loopback, neighbour discovery and the node's own
// connections) and returns an error wrapping ErrMismatch, so that a failed
// apply never leaves a policy wider than intended. Transient failures
// (retry.go) are retried a few times and never make the table be
// recreated. Apply returns when its sockets are closed.
func Apply(ns netns.NsHandle, p Policy) error {
	c, err := compile(p)
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	t := newNSTable(ns)
	defer t.socks.wait()
	if err := t.replace(&c); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	return nil
}

// Firewall applies successive policies to one namespace. When nothing but
// its own last transaction has changed the namespace's ruleset since it
// verified it (the kernel's ruleset generation tells), it sends only the set
// elements that changed, in one transaction, and checks each of them in
// the kernel; otherwise it replaces and verifies the whole table as Apply
// does. It is safe for concurrent use.
//
// Its sockets are closed off the path of Apply (closing one waits for the
// kernel to free what the transaction removed); Close waits for them.
type Firewall struct {
	t *nsTable

	mu     sync.Mutex
	closed bool
	last   *compiled // what the kernel held at generation gen, or nil
	gen    uint32
	src    *source // the lists of the last policy compiled, or nil
}

// New returns a Firewall for the network namespace ns. The caller keeps
// ownership of ns and must keep it open while the Firewall is used; the
// sockets Close waits for need no handle.
func New(ns netns.NsHandle) *Firewall {
	return &Firewall{t: newNSTable(ns)}
}

// Close waits until the sockets of past applies are closed; Apply then
// fails with ErrClosed. It leaves the table in force and does not close
// the namespace. Closing twice is allowed.
func (f *Firewall) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.t.socks.wait()
	return nil
}

// maxSpotChecks is the largest change verified element by element; a
// larger one is verified by reading the whole sets back.
const maxSpotChecks = 4096

// Apply makes the namespace's table enforce p, in one transaction, and
// verifies the result; on a mismatch it locks the table down as Apply does.
func (f *Firewall) Apply(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("apply firewall: %w", ErrClosed)
	}
	src := f.src
	if src == nil {
		src = &source{}
	}
	c, src, err := compileFrom(src, p)
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	// The source describes the caller's lists, whatever the kernel holds.
	f.src = src
	if err := f.apply(&c); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	return nil
}

// apply installs c: its changed elements when the kernel holds f.last,
// else the whole table.
func (f *Firewall) apply(c *compiled) error {
	k, err := f.t.socks.kernel()
	if err != nil {
		return err
	}
	defer f.t.socks.release(k.Close)
	if last := f.last; last != nil && last.port == c.port && last.refuse == c.refuse {
		f.last = nil // until the kernel is known to hold c
		// Keep the shards when the new ranges fit them, so that only
		// the shards whose ranges changed are written.
		if fits(c.allow4, last.cut4) {
			c.cut4 = last.cut4
		}
		if fits(c.allow6, last.cut6) {
			c.cut6 = last.cut6
		}
		gen, err := f.t.applyDelta(k, f.gen, last, c)
		switch {
		case err == nil:
			f.last, f.gen = c, gen
			return nil
		case errors.Is(err, errUncached):
			return nil
		case errors.Is(err, errStale), errors.Is(err, errReshard), classify(err) == classMalformed:
			// The ruleset changed behind our back, the shards
			// change, or the kernel refused the delta for what the
			// table holds (nothing committed): rewrite the table
			// whole.
		default:
			// A mismatch (the table is locked down), or a failure
			// that retries did not pass: the next apply writes the
			// whole table.
			return err
		}
	}
	if err := f.t.write(c); err != nil {
		return err
	}
	gen, err := k.gen()
	if err != nil {
		return err
	}
	if err := f.t.verify(c); err != nil {
		return err
	}
	// Cache only when no other transaction came between the write and
	// the read back, so the verified content is generation gen's.
	if again, err := k.gen(); err == nil && again == gen {
		f.last, f.gen = c, gen
	}
	return nil
}

// Current reads the policy enforced by the Moat table in ns, with merged
// prefixes. It returns an error wrapping ErrNotFound when there is no table.
func Current(ns netns.NsHandle) (Policy, error) {
	t := newNSTable(ns)
	defer t.socks.wait()
	st, err := t.readRetrying()
	if err != nil {
		return Policy{}, fmt.Errorf("read firewall: %w", err)
	}
	return st.policy(), nil
}

// Delete removes the Moat table from ns, in one transaction; it is not an
// error if there is none.
func Delete(ns netns.NsHandle) error {
	t := newNSTable(ns)
	defer t.socks.wait()
	if err := t.delete(); err != nil {
		return fmt.Errorf("delete firewall: %w", err)
	}
	return nil
}
