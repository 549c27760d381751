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
	"golang.org/x/sys/unix"
)

// Reading the table back and comparing it with what was written: the whole
// table after a full write or a large change, the changed elements one by
// one after a small one.

// verify reads the table back and, if its sets and maps are not c's,
// locks the table down and returns an error wrapping ErrMismatch. A table
// that cannot be read (after retries) is locked down too: what it admits
// is not known.
func (t *nsTable) verify(c *compiled) error {
	got, err := t.readRetrying()
	if err == nil {
		err = got.differs(c)
	}
	if err == nil {
		return nil
	}
	return t.lockDown(c.port, err)
}

// lockDown replaces the table with one whose sets are empty and returns an
// error wrapping ErrMismatch and cause.
func (t *nsTable) lockDown(port uint16, cause error) error {
	if err := t.write(&compiled{port: port}); err != nil {
		return fmt.Errorf("%w: %w; lock down: %w", ErrMismatch, cause, err)
	}
	return fmt.Errorf("%w: %w (table locked down)", ErrMismatch, cause)
}

// spotCheck verifies a committed delta d element by element in the
// kernel: every element added is there, every one deleted (and not added
// again) is gone. A mismatch locks the table down; a check the kernel
// gives no usable answer to makes it read the whole table back instead
// (and return errUncached when that matches).
func (t *nsTable) spotCheck(k *kernel, c *compiled, d delta) error {
	for _, s := range d.sets {
		add, del := elements(s.add), elements(s.del)
		added := make(map[string]bool, len(add))
		for _, e := range add {
			added[elemID(e)] = true
		}
		check := func(e nftables.SetElement, want bool) error {
			got, err := k.hasElem(s.set, e)
			if err != nil {
				// No usable answer (the deadline, an unexpected
				// errno): not evidence of a mismatch. Read the
				// whole sets back and decide on those.
				t.fallbacks.Add(1)
				if err := t.verify(c); err != nil {
					return err
				}
				return errUncached
			}
			if got != want {
				return t.lockDown(c.port, fmt.Errorf("set %s: element %x (end %v) present=%v, want %v", s.set, e.Key, e.IntervalEnd, got, want))
			}
			return nil
		}
		for _, e := range add {
			if err := check(e, true); err != nil {
				return err
			}
		}
		for _, e := range del {
			if !added[elemID(e)] {
				if err := check(e, false); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// state is what the Moat table in a namespace holds.
type state struct {
	port   uint16
	refuse bool                 // the input chain resets TCP to port
	sets   map[string][]span    // every set's ranges, by name
	maps   map[string][]mapElem // every verdict map's elements, sorted
}

// differs returns an error saying how st differs from c, or nil.
func (st *state) differs(c *compiled) error {
	if st.port != c.port {
		return fmt.Errorf("port %d, want %d", st.port, c.port)
	}
	if st.refuse != c.refuse {
		return fmt.Errorf("refuse %v, want %v", st.refuse, c.refuse)
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
	c := compiled{port: st.port, refuse: st.refuse, allow4: normalize(allow4), allow6: normalize(allow6)}
	c.peer4, c.peer6 = splitFamilies(normalize(peers))
	return c.policy()
}

// readWorkers is how many sets are dumped at once, each on its own
// socket.
const readWorkers = 4

// readRetrying is read, retried on transient failures.
func (t *nsTable) readRetrying() (*state, error) {
	var st *state
	err := t.backoff.retry(func() error {
		var err error
		st, err = t.read()
		return err
	}, t.retried)
	return st, err
}

// read returns what the Moat table holds.
func (t *nsTable) read() (*state, error) {
	conn, err := t.socks.conn(0)
	if err != nil {
		return nil, err
	}
	defer t.socks.release(conn.CloseLasting)
	tbl, err := conn.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("list table: %w", err)
	}
	sets, err := conn.GetSets(tbl)
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
			k, err := t.socks.kernel()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer t.socks.release(k.Close)
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
	ch, err := conn.ListChain(tbl, "input")
	if err != nil {
		return nil, fmt.Errorf("list chain: %w", err)
	}
	rules, err := conn.GetRules(tbl, ch)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	st.port = portOf(rules)
	st.refuse = refuses(rules)
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

// refuses reports whether rules hold a TCP reset (Policy.Refuse).
func refuses(rules []*nftables.Rule) bool {
	for _, r := range rules {
		for _, e := range r.Exprs {
			if rj, ok := e.(*expr.Reject); ok && rj.Type == unix.NFT_REJECT_TCP_RST {
				return true
			}
		}
	}
	return false
}
