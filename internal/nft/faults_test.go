package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// faultyCommitter stands between the package and the kernel: it records
// the message types of every batch it is given, refuses the first ones
// with the errors in fail (as the kernel would, committing nothing), and
// passes the others on.
type faultyCommitter struct {
	next committer

	mu      sync.Mutex
	fail    []error
	batches [][]uint16 // the nf_tables message types of every batch, in order
}

func (f *faultyCommitter) commit(b *batch) error {
	if err := b.seal(); err != nil {
		return err
	}
	f.mu.Lock()
	f.batches = append(f.batches, batchTypes(b))
	var err error
	if len(f.fail) > 0 {
		err, f.fail = f.fail[0], f.fail[1:]
	}
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("message 1 of %d: %w", b.n-2, err)
	}
	return f.next.commit(b)
}

// failNext makes the next commits fail with errs.
func (f *faultyCommitter) failNext(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = append(f.fail, errs...)
}

// sent returns the batches given so far and forgets them.
func (f *faultyCommitter) sent() [][]uint16 {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.batches
	f.batches = nil
	return b
}

// batchTypes returns the nf_tables message types (NFT_MSG_*) of a sealed
// batch, without its begin and end.
func batchTypes(b *batch) []uint16 {
	var out []uint16
	for buf := b.buf; len(buf) >= nlmsgHdrLen; {
		n := int(binary.NativeEndian.Uint32(buf))
		typ := binary.NativeEndian.Uint16(buf[4:])
		if typ != unix.NFNL_MSG_BATCH_BEGIN && typ != unix.NFNL_MSG_BATCH_END {
			out = append(out, typ&0xff)
		}
		buf = buf[n:]
	}
	return out
}

// faultyFirewall returns a Firewall whose commits go through a
// faultyCommitter, with a fast backoff.
func faultyFirewall(t *testing.T) (*Firewall, *faultyCommitter, func() uint64) {
	n := newNS(t)
	fw := newFirewall(t, n.Handle)
	fc := &faultyCommitter{next: fw.t.commit}
	fw.t.commit = fc
	fw.t.backoff.first, fw.t.backoff.limit = time.Millisecond, 4*time.Millisecond
	handle := func() uint64 {
		t.Helper()
		h, err := tableHandle(fw.t)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	return fw, fc, handle
}

// nftaTableHandle is NFTA_TABLE_HANDLE, which x/sys/unix does not name.
const nftaTableHandle = 4

// tableHandle returns the kernel's handle of the Moat table: a table
// deleted and created again, even in one transaction, gets a new one.
func tableHandle(t *nsTable) (uint64, error) {
	k, err := t.socks.kernel()
	if err != nil {
		return 0, err
	}
	defer t.socks.release(k.Close)
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: []byte(TableName + "\x00")}})
	if err != nil {
		return 0, err
	}
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(nfgen(unix.NFPROTO_INET), attrs...),
	}
	var handle uint64
	err = k.roundTrip(req, time.Second, func(m syscall.NetlinkMessage) error {
		return eachAttr(m.Data[4:], func(typ uint16, v []byte) error {
			if typ == nftaTableHandle && len(v) == 8 {
				handle = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	})
	if err == nil && handle == 0 {
		err = errors.New("no table handle in the reply")
	}
	return handle, err
}

func hasDelTable(batches [][]uint16) bool {
	for _, b := range batches {
		if slices.Contains(b, unix.NFT_MSG_DELTABLE) {
			return true
		}
	}
	return false
}

// TestTransientFailureKeepsTable injects transient errors into the
// commits of a Firewall's applies, on the incremental and the whole-table
// paths: they are retried and the applies succeed; when they outlast the
// retries the apply fails, the policy in force is the previous one, and at
// no point was the table deleted (no batch deletes it, its kernel handle
// never changes).
func TestTransientFailureKeepsTable(t *testing.T) {
	fw, fc, handle := faultyFirewall(t)
	pol := bigPolicy(3*shardElems, 100, 0)
	if err := fw.Apply(pol); err != nil {
		t.Fatal(err)
	}
	h := handle()
	fc.sent()
	ebusy, eagain, enobufs, eintr := unix.EBUSY, unix.EAGAIN, unix.ENOBUFS, unix.EINTR
	steps := []struct {
		name   string
		change func(p *Policy)
		fail   []error
		ok     bool
	}{
		{"incremental", func(p *Policy) { p.AllowV4[10] = netip.MustParsePrefix("192.0.2.0/24") }, []error{ebusy, eagain}, true},
		{"whole table (new port)", func(p *Policy) { p.Port++ }, []error{enobufs, eintr, ebusy}, true},
		{"incremental, retries exhausted", func(p *Policy) { p.AllowV4[11] = netip.MustParsePrefix("198.51.100.0/24") }, []error{ebusy, ebusy, ebusy, ebusy, ebusy}, false},
		{"whole table, retries exhausted", func(p *Policy) { p.Port++ }, []error{eagain, eagain, eagain, eagain, eagain}, false},
		{"after the failures", func(p *Policy) { p.AllowV6 = p.AllowV6[:50] }, nil, true},
	}
	for _, st := range steps {
		next := pol
		next.AllowV4, next.AllowV6 = slices.Clone(pol.AllowV4), slices.Clone(pol.AllowV6)
		st.change(&next)
		fc.failNext(st.fail...)
		retries := fw.t.retries.Load()
		err := fw.Apply(next)
		if st.ok && err != nil {
			t.Fatalf("%s: Apply = %v, want success after %d retries", st.name, err, len(st.fail))
		}
		if !st.ok && classify(err) != classTransient {
			t.Fatalf("%s: Apply = %v, want a transient error", st.name, err)
		}
		if st.ok {
			pol = next
		}
		if n := fw.t.retries.Load() - retries; n < int64(min(len(st.fail), fw.t.backoff.attempts-1)) {
			t.Errorf("%s: %d retries, want at least %d", st.name, n, len(st.fail))
		}
		got, err := Current(fw.t.socks.ns)
		if err != nil {
			t.Fatal(err)
		}
		if want := merged(pol); !equalPolicy(got, want) {
			t.Errorf("%s: Current() has port %d, %d v4 and %d v6 prefixes, want %d, %d and %d",
				st.name, got.Port, len(got.AllowV4), len(got.AllowV6), want.Port, len(want.AllowV4), len(want.AllowV6))
		}
		if sent := fc.sent(); hasDelTable(sent) {
			t.Errorf("%s: one of the %d batches sent deletes the table", st.name, len(sent))
		}
		if got := handle(); got != h {
			t.Errorf("%s: table handle %d, want %d: the table was recreated", st.name, got, h)
		}
		fc.mu.Lock()
		if len(fc.fail) != 0 {
			t.Errorf("%s: %d injected failures not consumed", st.name, len(fc.fail))
			fc.fail = nil
		}
		fc.mu.Unlock()
	}
}

// TestMalformedRecreatesInOneTransaction: an error that says the table is
// not the one written (EINVAL on the in-place write) makes the apply
// replace the table whole, deleting and creating it in the same batch.
func TestMalformedRecreatesInOneTransaction(t *testing.T) {
	fw, fc, handle := faultyFirewall(t)
	pol := bigPolicy(100, 10, 0)
	if err := fw.Apply(pol); err != nil {
		t.Fatal(err)
	}
	h := handle()
	fc.sent()
	pol.Port++ // the whole-table path
	fc.failNext(unix.EINVAL)
	if err := fw.Apply(pol); err != nil {
		t.Fatal(err)
	}
	sent := fc.sent()
	if len(sent) != 2 || hasDelTable(sent[:1]) {
		t.Fatalf("batches %v, want the refused in-place write, then the replacement", sent)
	}
	i := slices.Index(sent[1], unix.NFT_MSG_DELTABLE)
	if i < 0 || !slices.Contains(sent[1][i:], unix.NFT_MSG_NEWTABLE) || !slices.Contains(sent[1][i:], unix.NFT_MSG_NEWCHAIN) {
		t.Errorf("replacement batch %v: want the table deleted and created again in it", sent[1])
	}
	if handle() == h {
		t.Error("table handle unchanged: the table was not replaced")
	}
	if got, err := Current(fw.t.socks.ns); err != nil || !equalPolicy(got, merged(pol)) {
		t.Errorf("Current() = %v, %v, want %v", got, err, merged(pol))
	}
}

// TestMalformedTable applies a policy over a table named like Moat's whose
// input chain is a regular chain: the kernel refuses the in-place write,
// and the table is replaced whole.
func TestMalformedTable(t *testing.T) {
	t.Parallel()
	n := newNS(t)
	conn, err := nftables.New(nftables.WithNetNSFd(int(n.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := conn.AddTable(moatTable())
	conn.AddChain(&nftables.Chain{Name: "input", Table: tbl})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	nt := newNSTable(n.Handle)
	defer nt.socks.wait()
	h, err := tableHandle(nt)
	if err != nil {
		t.Fatal(err)
	}
	pol := Policy{Port: pgPort, AllowV4: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	c, err := compile(pol)
	if err != nil {
		t.Fatal(err)
	}
	if err := nt.replace(&c); err != nil {
		t.Fatal(err)
	}
	if got, err := tableHandle(nt); err != nil || got == h {
		t.Errorf("table handle %d, %v; want a new one: the table was not replaced", got, err)
	}
	if got, err := Current(n.Handle); err != nil || !equalPolicy(got, pol) {
		t.Errorf("Current() = %v, %v, want %v", got, err, pol)
	}
}
