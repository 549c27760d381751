package nft

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestBatchElems checks the batch's own element encoding: decoded as the
// kernel would, each message holds the elements the library would have
// written for the same ranges, in order, with every element list under
// the 16-bit attribute length, and the messages are framed as a batch.
func TestBatchElems(t *testing.T) {
	var v4, v6 []span
	for i := range 3000 { // several messages per family
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0})
		v4 = append(v4, span{a, netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 127})})
		b := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)})
		v6 = append(v6, span{b, b})
	}
	// A range reaching the family's last address has no interval end.
	v4 = append(v4, span{netip.MustParseAddr("255.0.0.0"), lastAddr(true)})
	v6 = append(v6, span{netip.MustParseAddr("ff00::"), lastAddr(false)})

	for _, tc := range []struct {
		name  string
		v4    bool
		spans []span
		del   bool
	}{
		{"allow4_a0", true, v4, false},
		{"allow6_a0", false, v6, false},
		{"allow4_b1", true, v4[:7], true},
	} {
		b := newBatch(0)
		if err := b.elems(tc.name, 42, tc.v4, tc.spans, tc.del); err != nil {
			t.Fatal(err)
		}
		b.control(unix.NFNL_MSG_BATCH_END)
		var got []nftables.SetElement
		var err error
		buf, n := b.buf, 0
		for len(buf) > 0 {
			l := int(binary.NativeEndian.Uint32(buf))
			var m netlink.Message
			if err = m.UnmarshalBinary(buf[:l]); err != nil {
				t.Fatalf("%s: message %d: %v", tc.name, n, err)
			}
			buf = buf[l:]
			n++
			typ := uint16(m.Header.Type)
			switch {
			case n == 1 && typ == unix.NFNL_MSG_BATCH_BEGIN, len(buf) == 0 && typ == unix.NFNL_MSG_BATCH_END:
				continue
			case tc.del && typ != nftMsg|unix.NFT_MSG_DELSETELEM, !tc.del && typ != nftMsg|unix.NFT_MSG_NEWSETELEM:
				t.Fatalf("%s: message %d has type %#x", tc.name, n, typ)
			}
			if m.Header.Sequence != uint32(n) {
				t.Errorf("%s: message %d has sequence %d", tc.name, n, m.Header.Sequence)
			}
			var set string
			var id uint32
			err := eachAttr(m.Data[4:], func(typ uint16, v []byte) error {
				switch typ {
				case unix.NFTA_SET_ELEM_LIST_SET:
					set = string(v)
				case unix.NFTA_SET_ELEM_LIST_SET_ID:
					id = binary.BigEndian.Uint32(v)
				case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
					if len(v) > maxElemBytes {
						t.Errorf("%s: element list of %d bytes", tc.name, len(v)+4)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if set != tc.name+"\x00" || id != 42 {
				t.Errorf("%s: message %d for set %q id %d", tc.name, n, set, id)
			}
			els, err := decodeElems(m)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, els...)
		}
		if n < 3 {
			t.Errorf("%s: %d messages, want several", tc.name, n)
		}
		if diff := cmp.Diff(elements(tc.spans), got); diff != "" {
			t.Errorf("%s: elements differ (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestBatchCommitError checks that a batch the kernel refuses returns the
// kernel's error and commits nothing, not even its valid messages.
func TestBatchCommitError(t *testing.T) {
	t.Parallel()
	n := newNS(t)
	pol := Policy{Port: pgPort, AllowV4: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}
	if err := Apply(n.Handle, pol); err != nil {
		t.Fatal(err)
	}
	b := newBatch(0)
	more := []span{{netip.MustParseAddr("10.9.0.0"), netip.MustParseAddr("10.9.0.255")}}
	if err := b.elems("allow4_a0", 0, true, more, false); err != nil {
		t.Fatal(err)
	}
	if err := b.elems("allow4_nosuch", 0, true, more, false); err != nil {
		t.Fatal(err)
	}
	if err := newNSTable(n.Handle).commit.commit(b); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("commit = %v, want ENOENT", err)
	}
	got, err := Current(n.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !equalPolicy(got, pol) {
		t.Errorf("after a refused batch, Current() = %v, want %v", got, pol)
	}
	// The valid part alone commits.
	b = newBatch(0)
	if err := b.elems("allow4_a0", 0, true, more, false); err != nil {
		t.Fatal(err)
	}
	if err := newNSTable(n.Handle).commit.commit(b); err != nil {
		t.Fatal(err)
	}
	pol.AllowV4 = append(pol.AllowV4, netip.MustParsePrefix("10.9.0.0/24"))
	if got, err := Current(n.Handle); err != nil || !equalPolicy(got, pol) {
		t.Errorf("Current() = %v, %v, want %v", got, err, pol)
	}
}
