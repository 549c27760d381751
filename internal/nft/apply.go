package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotFound is returned by Current when the namespace has no Moat table.
var ErrNotFound = errors.New("firewall table not found")

// ErrMismatch is returned (wrapped) when the sets read back after a
// transaction differ from the ones written. The table is then locked down
// (see Apply).
var ErrMismatch = errors.New("firewall sets read back differ from the policy")

// maxElemBytes bounds the encoded elements of one set-element message.
// google/nftables v0.3.0 encodes all the elements of one call in a single
// netlink attribute whose length is a uint16 and silently truncates it past
// 64 KiB; elements are therefore written in several messages of the same
// batch, each well under that limit.
const maxElemBytes = 60_000

// Encoded size of one interval element: the list item header, the
// interval-end flags attribute and the nested key.
const (
	elemBytes4 = 4 + 8 + 4 + 4 + 4
	elemBytes6 = 4 + 8 + 4 + 4 + 16
)

// Apply replaces the Moat table in the network namespace ns with the
// ruleset for p, in one netlink transaction: the kernel switches from the
// old ruleset to the new one at commit, with no moment in between, and
// keeps the old one whole if the transaction fails. It then reads the sets
// back; if they differ from p, it replaces the table with a locked-down one
// (empty sets: nothing but loopback, neighbour discovery and the node's own
// connections) and returns an error wrapping ErrMismatch, so that a failed
// apply never leaves a policy wider than intended.
func Apply(ns netns.NsHandle, p Policy) error {
	c, err := compile(p)
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	if err := replace(ns, &c); err != nil {
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
type Firewall struct {
	ns netns.NsHandle

	mu   sync.Mutex
	last *compiled // what the kernel held at generation gen, or nil
	gen  uint32
	src  *source // the lists of the last policy compiled, or nil
}

// New returns a Firewall for the network namespace ns. The caller keeps
// ownership of ns and must keep it open while the Firewall is used.
func New(ns netns.NsHandle) *Firewall {
	return &Firewall{ns: ns}
}

// maxSpotChecks is the largest change verified element by element; a
// larger one is verified by reading the whole sets back.
const maxSpotChecks = 4096

// Apply makes the namespace's table enforce p, in one transaction, and
// verifies the result; on a mismatch it locks the table down as Apply does.
func (f *Firewall) Apply(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
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
	k, err := dialKernel(f.ns)
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	defer closeLater(k.Close)
	if f.last != nil && f.last.port == c.port {
		// Keep the shards when the new ranges fit them, so that only
		// the shards whose ranges changed are written.
		if fits(c.allow4, f.last.cut4) {
			c.cut4 = f.last.cut4
		}
		if fits(c.allow6, f.last.cut6) {
			c.cut6 = f.last.cut6
		}
		gen, err := applyDelta(f.ns, k, f.gen, f.last, &c)
		switch {
		case err == nil:
			f.last, f.gen = &c, gen
			return nil
		case errors.Is(err, errUncached):
			f.last = nil
			return nil
		case errors.Is(err, ErrMismatch):
			f.last = nil
			return fmt.Errorf("apply firewall: %w", err)
		}
		// The ruleset changed behind our back, or the kernel refused the
		// delta (nothing committed): rewrite the table whole.
	}
	f.last = nil
	if err := write(f.ns, &c); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	gen, err := k.gen()
	if err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	if err := verify(f.ns, &c); err != nil {
		return fmt.Errorf("apply firewall: %w", err)
	}
	// Cache only when no other transaction came between the write and
	// the read back, so the verified content is generation gen's.
	if again, err := k.gen(); err == nil && again == gen {
		f.last, f.gen = &c, gen
	}
	return nil
}

// Current reads the policy enforced by the Moat table in ns, with merged
// prefixes. It returns an error wrapping ErrNotFound when there is no table.
func Current(ns netns.NsHandle) (Policy, error) {
	st, err := read(ns)
	if err != nil {
		return Policy{}, fmt.Errorf("read firewall: %w", err)
	}
	return st.policy(), nil
}

// Delete removes the Moat table from ns; it is not an error if there is
// none.
func Delete(ns netns.NsHandle) error {
	conn, err := dial(ns, 0)
	if err != nil {
		return fmt.Errorf("delete firewall: %w", err)
	}
	defer closeLater(conn.CloseLasting)
	t := table()
	conn.AddTable(t) // so that the delete cannot fail for a missing table
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("delete firewall: %w", err)
	}
	return nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func newSet(t *nftables.Table, name string, v4 bool) *nftables.Set {
	kt := nftables.TypeIP6Addr
	if v4 {
		kt = nftables.TypeIPAddr
	}
	return &nftables.Set{Table: t, Name: name, Interval: true, KeyType: kt}
}

// setIDMu guards google/nftables v0.3.0's set-ID counter: AddSet
// increments a package-level variable without a lock, a data race when two
// namespaces are written at once. It is the only global state the library
// has, so Apply and Firewall.Apply on different namespaces are safe to call
// concurrently.
var setIDMu sync.Mutex

func addSet(conn *nftables.Conn, set *nftables.Set) error {
	setIDMu.Lock()
	defer setIDMu.Unlock()
	return conn.AddSet(set, nil)
}

// dial opens a conn to ns whose socket buffers hold a batch of batchBytes.
// A batch is sent in one sendmsg, so the send buffer must hold all of it;
// the limits are raised past net.core.wmem_max with SO_SNDBUFFORCE, as nft
// does. The conn keeps one socket for all its requests (the library's
// default opens and closes one per request, and each close may wait, see
// closeLater); the caller closes it with closeLater(conn.CloseLasting).
func dial(ns netns.NsHandle, batchBytes int) (*nftables.Conn, error) {
	snd := max(batchBytes+batchBytes/4+(1<<20), 4<<20)
	rcv := 8 << 20
	return nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(ns)), nftables.WithSockOptions(func(c *netlink.Conn) error {
		return setBuffers(c, snd, rcv)
	}))
}

// closeLater closes an nf_tables socket without waiting for it. Closing
// one waits until the kernel has freed what committed transactions
// removed (any namespace's: after an RCU grace period, and for a replaced
// 100,000-prefix table, the freeing itself): ~15 ms after deleting a
// single element. Nothing the caller does depends on that memory being
// freed, so the close runs on its own goroutine.
func closeLater(close func() error) {
	go close()
}

func setBuffers(c *netlink.Conn, snd, rcv int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd); e != nil {
			serr = fmt.Errorf("set netlink send buffer: %w", e)
			return
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv); e != nil {
			serr = fmt.Errorf("set netlink receive buffer: %w", e)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// elements returns the interval-set elements for spans: a start key and,
// unless the range runs to the family's last address, an interval-end key
// one past its end.
func elements(spans []span) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(spans))
	// One array holds every key: a 100,000-prefix set is 200,000 keys.
	var keys []byte
	if len(spans) > 0 {
		keys = make([]byte, 0, 2*len(spans)*spans[0].from.BitLen()/8)
	}
	key := func(a netip.Addr) []byte {
		n := len(keys)
		keys, _ = a.AppendBinary(keys)
		return keys[n:len(keys):len(keys)]
	}
	for _, s := range spans {
		out = append(out, nftables.SetElement{Key: key(s.from)})
		if end := s.to.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: key(end), IntervalEnd: true})
		}
	}
	return out
}

func elemBytes(v4 bool) int {
	if v4 {
		return elemBytes4
	}
	return elemBytes6
}

// addElements queues elems for set in messages under maxElemBytes each.
// del queues deletions instead.
func addElements(conn *nftables.Conn, set *nftables.Set, v4 bool, elems []nftables.SetElement, del bool) error {
	for chunk := range slices.Chunk(elems, maxElemBytes/elemBytes(v4)) {
		var err error
		if del {
			err = conn.SetDeleteElements(set, chunk)
		} else {
			err = conn.SetAddElements(set, chunk)
		}
		if err != nil {
			return fmt.Errorf("set %s: %w", set.Name, err)
		}
	}
	return nil
}

func batchBytes(sets []namedSet) int {
	n := 64 << 10 // table, chain, rules, headers
	for _, s := range sets {
		chunks := 2*len(s.spans)*elemBytes(s.v4)/maxElemBytes + 1
		n += 2*len(s.spans)*elemBytes(s.v4) + chunks*128
	}
	return n
}

// replace writes the whole table for c in one transaction and verifies it.
func replace(ns netns.NsHandle, c *compiled) error {
	if err := write(ns, c); err != nil {
		return err
	}
	return verify(ns, c)
}

// write installs c in one transaction. When the table already has its
// input chain, the chain (and so its hook) stays: its rules are flushed and
// added again, pointing at new sets of the other generation, and the old
// sets are deleted, all in the same transaction. Packets see the old rules
// and sets until the commit and the new ones after it. Only a missing or
// malformed table is deleted and created anew: a new base chain is hooked
// before the commit and drops everything until then, which is narrower
// than any policy, never wider.
func write(ns netns.NsHandle, c *compiled) error {
	err := writeTable(ns, c, false)
	if errors.Is(err, errMalformed) {
		err = writeTable(ns, c, true)
	}
	return err
}

var errMalformed = errors.New("table is not Moat's")

func writeTable(ns netns.NsHandle, c *compiled, recreate bool) error {
	var oldSets []*nftables.Set
	var oldChains []*nftables.Chain
	if !recreate {
		conn, err := dial(ns, 0)
		if err != nil {
			return err
		}
		oldSets, oldChains, err = contents(conn)
		closeLater(conn.CloseLasting)
		if err != nil {
			return err
		}
		c.gen = "a"
		for _, s := range oldSets {
			if s.Name == setPeer4+"_a" {
				c.gen = "b"
			}
		}
		if oldSets == nil && oldChains == nil {
			recreate = true // no table: nothing to keep
		}
	}
	// The table, chains, sets, maps and rules are built by the library
	// and recorded; the sets' elements are written into the batch
	// directly (batch.go).
	var msgs []netlink.Message
	conn, err := recorder(&msgs)
	if err != nil {
		return err
	}
	b := newBatch(batchBytes(c.sets()))
	t := table()
	conn.AddTable(t)
	if recreate {
		// Create, delete and recreate: the delete cannot fail for a
		// missing table, and the new table starts empty.
		conn.DelTable(t)
		conn.AddTable(t)
		c.gen = "a"
	}
	policy := nftables.ChainPolicyDrop
	ch := conn.AddChain(&nftables.Chain{
		Name:     "input",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &policy,
	})
	if !recreate {
		// Unbind the old sets and maps from every rule.
		conn.FlushChain(ch)
		for _, o := range oldChains {
			if o.Name != ch.Name {
				conn.FlushChain(o)
			}
		}
	}
	fams := c.families()
	chains := make(map[string]*nftables.Chain)
	for _, f := range fams {
		for _, sh := range f.shards {
			chains[sh.name] = conn.AddChain(&nftables.Chain{Name: sh.name, Table: t})
		}
	}
	sets := make(map[string]*nftables.Set)
	tsets := c.tableSets()
	for _, s := range tsets {
		set := newSet(t, s.name, s.v4)
		if s.vmap {
			set.IsMap, set.DataType = true, nftables.TypeVerdict
		}
		if err := addSet(conn, set); err != nil {
			return fmt.Errorf("add set %s: %w", s.name, err)
		}
		if s.vmap {
			// A map has a few elements (one range per shard).
			if err := addElements(conn, set, s.v4, jumpElements(s.jumps), false); err != nil {
				return err
			}
		}
		sets[s.name] = set
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	b.record(msgs)
	msgs = msgs[:0]
	for _, s := range tsets {
		if !s.vmap {
			if err := b.elems(s.name, sets[s.name].ID, s.v4, s.spans, false); err != nil {
				return err
			}
		}
	}
	for _, r := range c.rules() {
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs(sets)})
	}
	for _, f := range fams {
		for _, sh := range f.shards {
			for _, r := range c.shardRules(f.v4, sh.name) {
				conn.AddRule(&nftables.Rule{Table: t, Chain: chains[sh.name], Exprs: r.exprs(sets)})
			}
		}
	}
	// The old maps go before the old chains they jump to.
	for _, o := range oldSets {
		conn.DelSet(o)
	}
	for _, o := range oldChains {
		if o.Name != ch.Name {
			conn.DelChain(o)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	b.record(msgs)
	if err := b.commit(ns); err != nil {
		if !recreate {
			return fmt.Errorf("%w: commit: %w", errMalformed, err)
		}
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// jumpElements returns the elements of a verdict map: each range's start
// jumps to its chain.
func jumpElements(jumps []jump) []nftables.SetElement {
	var out []nftables.SetElement
	for _, j := range jumps {
		out = append(out, nftables.SetElement{Key: j.span.from.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: j.chain}})
		if end := j.span.to.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// contents lists the sets and chains of the Moat table, nil if there is
// no table.
func contents(conn *nftables.Conn) ([]*nftables.Set, []*nftables.Chain, error) {
	t, err := conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("list table: %w", err)
	}
	sets, err := conn.GetSets(t)
	if err != nil {
		return nil, nil, fmt.Errorf("list sets: %w", err)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, nil, fmt.Errorf("list chains: %w", err)
	}
	var mine []*nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			mine = append(mine, ch)
		}
	}
	if sets == nil {
		sets = []*nftables.Set{}
	}
	return sets, mine, nil
}

// errUncached means the delta was applied and verified by reading the
// whole table back, but is not known to be generation-exact.
var errUncached = errors.New("applied; ruleset generation unknown")

// errStale means the ruleset is not the one the Firewall last verified.
var errStale = errors.New("ruleset changed since the last apply")

// errReshard means the new ranges do not fit the old shards.
var errReshard = errors.New("shards change")

// applyDelta changes the sets from old, held by the kernel at generation
// gen, to c in one transaction, sending only the ranges that differ, and
// verifies the result. It returns the new generation.
func applyDelta(ns netns.NsHandle, k *kernel, gen uint32, old, c *compiled) (uint32, error) {
	c.gen = old.gen
	if !slices.Equal(old.cut4, c.cut4) || !slices.Equal(old.cut6, c.cut6) {
		return 0, errReshard
	}
	if g, err := k.gen(); err != nil {
		return 0, err
	} else if g != gen {
		return 0, errStale
	}
	type delta struct {
		set                string
		del, add           []nftables.SetElement
		delSpans, addSpans []span
		v4                 bool
	}
	var deltas []delta
	size, changed := 0, 0
	oldSets := old.sets()
	for i, s := range c.sets() {
		del, add := diff(oldSets[i].spans, s.spans)
		if len(del)+len(add) == 0 {
			continue
		}
		d := delta{s.name, elements(del), elements(add), del, add, s.v4}
		size += (len(d.del) + len(d.add)) * elemBytes(s.v4)
		changed += len(d.del) + len(d.add)
		deltas = append(deltas, d)
	}
	if len(deltas) == 0 {
		return gen, nil
	}
	b := newBatch(size + 64<<10)
	// Deletions first: a range that grows or shrinks is deleted and added
	// again, and its start key may be the same.
	for _, d := range deltas {
		if err := b.elems(d.set, 0, d.v4, d.delSpans, true); err != nil {
			return 0, err
		}
	}
	for _, d := range deltas {
		if err := b.elems(d.set, 0, d.v4, d.addSpans, false); err != nil {
			return 0, err
		}
	}
	if err := b.commit(ns); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	after, err := k.gen()
	if err != nil || after != gen+1 || changed > maxSpotChecks {
		// Another transaction came in between, or the change is large:
		// read everything back.
		if err := verify(ns, c); err != nil {
			return 0, err
		}
		return 0, errUncached
	}
	for _, d := range deltas {
		added := make(map[string]bool, len(d.add))
		for _, e := range d.add {
			added[elemID(e)] = true
		}
		check := func(e nftables.SetElement, want bool) error {
			got, err := k.hasElem(d.set, e)
			if err != nil {
				// No usable answer (the deadline, an unexpected
				// errno): not evidence of a mismatch. Read the
				// whole sets back and decide on those.
				return fmt.Errorf("%w: %w", errFullVerify, err)
			}
			if got != want {
				return lockDown(ns, c.port, fmt.Errorf("set %s: element %x (end %v) present=%v, want %v", d.set, e.Key, e.IntervalEnd, got, want))
			}
			return nil
		}
		for _, e := range d.add {
			if err := check(e, true); err != nil {
				return verifyAll(ns, c, err)
			}
		}
		for _, e := range d.del {
			if !added[elemID(e)] {
				if err := check(e, false); err != nil {
					return verifyAll(ns, c, err)
				}
			}
		}
	}
	return after, nil
}

func elemID(e nftables.SetElement) string {
	if e.IntervalEnd {
		return "e" + string(e.Key)
	}
	return "s" + string(e.Key)
}

// diff returns the ranges of old not in new and of new not in old. Both
// are sorted and non-overlapping (mergeSpans), so one linear merge finds
// them without allocating for the common ranges.
func diff(old, new []span) (del, add []span) {
	i, j := 0, 0
	for i < len(old) && j < len(new) {
		o, n := old[i], new[j]
		if o == n {
			i++
			j++
			continue
		}
		c := o.from.Compare(n.from)
		if c == 0 {
			c = o.to.Compare(n.to)
		}
		if c < 0 {
			del = append(del, o)
			i++
		} else {
			add = append(add, n)
			j++
		}
	}
	del = append(del, old[i:]...)
	add = append(add, new[j:]...)
	return del, add
}

// verify reads the table back and, if its sets and maps are not c's,
// locks the table down and returns an error wrapping ErrMismatch.
func verify(ns netns.NsHandle, c *compiled) error {
	got, err := read(ns)
	if err == nil {
		err = got.differs(c)
	}
	if err == nil {
		return nil
	}
	return lockDown(ns, c.port, err)
}

// lockDown replaces the table with one whose sets are empty and returns an
// error wrapping ErrMismatch and cause.
func lockDown(ns netns.NsHandle, port uint16, cause error) error {
	if err := write(ns, &compiled{port: port}); err != nil {
		return fmt.Errorf("%w: %w; lock down: %w", ErrMismatch, cause, err)
	}
	return fmt.Errorf("%w: %w (table locked down)", ErrMismatch, cause)
}

// state is what the Moat table in a namespace holds.
type state struct {
	port uint16
	sets map[string][]span    // every set's ranges, by name
	maps map[string][]mapElem // every verdict map's elements, sorted
}

// differs returns an error saying how st differs from c, or nil.
func (st *state) differs(c *compiled) error {
	if st.port != c.port {
		return fmt.Errorf("port %d, want %d", st.port, c.port)
	}
	want := c.sets()
	if len(st.sets) != len(want) {
		return fmt.Errorf("%d sets, want %d", len(st.sets), len(want))
	}
	for _, s := range want {
		got, ok := st.sets[s.name]
		if !ok {
			return fmt.Errorf("set %s missing", s.name)
		}
		if !slices.Equal(got, s.spans) {
			return fmt.Errorf("set %s: content differs", s.name)
		}
	}
	fams := c.families()
	if len(st.maps) != len(fams) {
		return fmt.Errorf("%d maps, want %d", len(st.maps), len(fams))
	}
	for _, f := range fams {
		want := f.mapElems()
		sortMapElems(want)
		if !slices.Equal(st.maps[f.vmap], want) {
			return fmt.Errorf("map %s: content differs", f.vmap)
		}
	}
	return nil
}

// policy returns what st admits: the union of its sets of each kind.
func (st *state) policy() Policy {
	var allow4, allow6, peers []span
	for name, spans := range st.sets {
		switch {
		case strings.HasPrefix(name, setAllow4+"_"):
			allow4 = append(allow4, spans...)
		case strings.HasPrefix(name, setAllow6+"_"):
			allow6 = append(allow6, spans...)
		case strings.HasPrefix(name, setPeer4+"_"), strings.HasPrefix(name, setPeer6+"_"):
			peers = append(peers, spans...)
		}
	}
	c := compiled{port: st.port, allow4: normalize(allow4), allow6: normalize(allow6)}
	c.peer4, c.peer6 = splitFamilies(normalize(peers))
	return c.policy()
}

// readWorkers is how many sets are dumped at once, each on its own
// socket.
const readWorkers = 4

// read returns what the Moat table in ns holds.
func read(ns netns.NsHandle) (*state, error) {
	conn, err := dial(ns, 0)
	if err != nil {
		return nil, err
	}
	defer closeLater(conn.CloseLasting)
	t, err := conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("list table: %w", err)
	}
	sets, err := conn.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	st := &state{sets: make(map[string][]span), maps: make(map[string][]mapElem)}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		next atomic.Int64
	)
	for range min(readWorkers, len(sets)) {
		wg.Go(func() {
			k, err := dialKernel(ns)
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer closeLater(k.Close)
			for i := int(next.Add(1)) - 1; i < len(sets); i = int(next.Add(1)) - 1 {
				err := readSet(k, sets[i], st, &mu)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ch, err := conn.ListChain(t, "input")
	if err != nil {
		return nil, fmt.Errorf("list chain: %w", err)
	}
	rules, err := conn.GetRules(t, ch)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	st.port = portOf(rules)
	return st, nil
}

// readSet dumps the set or map s into st.
func readSet(k *kernel, s *nftables.Set, st *state, mu *sync.Mutex) error {
	v4 := strings.HasPrefix(s.Name, setAllow4) || strings.HasPrefix(s.Name, setPeer4)
	if s.IsMap {
		els, err := k.mapElems(unix.NFPROTO_INET, s.Name)
		if err != nil {
			return err
		}
		for _, e := range els {
			if e.key.Is4() != v4 {
				return fmt.Errorf("map %s: bad element key %v", s.Name, e.key)
			}
		}
		sortMapElems(els)
		mu.Lock()
		st.maps[s.Name] = els
		mu.Unlock()
		return nil
	}
	els, err := k.elems(unix.NFPROTO_INET, s.Name)
	if err != nil {
		return err
	}
	spans, err := spansOfElems(els, v4)
	if err != nil {
		return fmt.Errorf("set %s: %w", s.Name, err)
	}
	mu.Lock()
	st.sets[s.Name] = spans
	mu.Unlock()
	return nil
}

// spansOf converts interval-set elements back to the ranges they admit,
// with the kernel's lookup semantics: the element with the greatest key not
// above an address decides, a start admitting and an interval end not. An
// interval end with no range open admits nothing (nft writes one at the
// family's zero address), so it is skipped.
func spansOf(elems []nftables.SetElement, v4 bool) ([]span, error) {
	els := make([]elem, 0, len(elems))
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("bad element key %x", e.Key)
		}
		els = append(els, elem{a, e.IntervalEnd})
	}
	return spansOfElems(els, v4)
}

// elem is one interval-set element as read back from the kernel.
type elem struct {
	key netip.Addr
	end bool
}

// compareElem orders elements by key; at the same key an interval end
// comes first, since a start at that key decides.
func compareElem(a, b elem) int {
	if c := a.key.Compare(b.key); c != 0 {
		return c
	}
	if a.end == b.end {
		return 0
	}
	if a.end {
		return -1
	}
	return 1
}

// spansOfElems is spansOf for decoded elements; it reorders els.
func spansOfElems(els []elem, v4 bool) ([]span, error) {
	for _, e := range els {
		if e.key.Is4() != v4 {
			return nil, fmt.Errorf("bad element key %v", e.key)
		}
	}
	// The kernel dumps an rbtree set in descending order: reversing is
	// enough then, and sorting is the fallback.
	if !slices.IsSortedFunc(els, compareElem) {
		slices.Reverse(els)
		if !slices.IsSortedFunc(els, compareElem) {
			slices.SortFunc(els, compareElem)
		}
	}
	out := make([]span, 0, len(els)/2+1)
	add := func(s span) {
		if n := len(out); n > 0 && out[n-1].to.Next() == s.from {
			out[n-1].to = s.to
			return
		}
		out = append(out, s)
	}
	var from netip.Addr // start of the open range, if valid
	for _, e := range els {
		switch {
		case !e.end && !from.IsValid():
			from = e.key
		case e.end && from.IsValid():
			if e.key != from {
				add(span{from, e.key.Prev()})
			}
			from = netip.Addr{}
		}
	}
	if from.IsValid() {
		last := netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		if v4 {
			last = netip.AddrFrom4([4]byte{255, 255, 255, 255})
		}
		add(span{from, last})
	}
	return out, nil
}

// portOf finds the port of the first "tcp dport" match in rules.
func portOf(rules []*nftables.Rule) uint16 {
	for _, r := range rules {
		for i, e := range r.Exprs {
			p, ok := e.(*expr.Payload)
			if !ok || p.Base != expr.PayloadBaseTransportHeader || p.Offset != 2 || p.Len != 2 || i+1 == len(r.Exprs) {
				continue
			}
			if c, ok := r.Exprs[i+1].(*expr.Cmp); ok && len(c.Data) == 2 {
				return uint16(c.Data[0])<<8 | uint16(c.Data[1])
			}
		}
	}
	return 0
}

// spotCheckFallbacks counts the incremental applies whose spot checks got
// no usable answer and were verified by a full read-back instead (tests
// check that this stays rare).
var spotCheckFallbacks atomic.Int64

// errFullVerify: a spot check could not be made; read everything back.
var errFullVerify = errors.New("spot check unavailable")

// verifyAll finishes a delta whose spot checks failed with err: when a
// check could not be made it reads the whole sets back instead.
func verifyAll(ns netns.NsHandle, c *compiled, err error) (uint32, error) {
	if !errors.Is(err, errFullVerify) {
		return 0, err
	}
	spotCheckFallbacks.Add(1)
	if err := verify(ns, c); err != nil {
		return 0, err
	}
	return 0, errUncached
}
