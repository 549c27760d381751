package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A batch is one nf_tables transaction as the raw netlink messages sent in
// one sendmsg: NFNL_MSG_BATCH_BEGIN, the messages, NFNL_MSG_BATCH_END.
//
// The table, chains, sets and rules are built with google/nftables (a
// recorder collects the messages its Conn would send); the elements of the
// interval sets, nearly all of a large batch, are encoded straight into the
// batch's buffer. The library marshals every element into attributes of its
// own and copies the whole batch once more in sendmsg: for 200,000
// elements, most of the Go side of a write and its garbage.
type batch struct {
	buf     []byte
	n       int    // messages so far, the begin message included
	last    int    // offset of the last message's header, -1 if none
	lastSeq uint32 // the last message's sequence number, once sealed
	sealed  bool
}

const (
	nlmsgHdrLen = unix.SizeofNlMsghdr
	nfgenHdrLen = 4
	attrHdrLen  = unix.SizeofNlAttr
	batchSubsys = unix.NFNL_SUBSYS_NFTABLES
	nftMsg      = unix.NFNL_SUBSYS_NFTABLES << 8
)

// newBatch starts a batch; size is a hint of its length in bytes.
func newBatch(size int) *batch {
	b := &batch{buf: make([]byte, 0, size), last: -1}
	b.control(unix.NFNL_MSG_BATCH_BEGIN)
	return b
}

// control appends a batch begin or end message.
func (b *batch) control(typ uint16) {
	h := b.header(typ, unix.NLM_F_REQUEST, unix.AF_UNSPEC)
	binary.BigEndian.PutUint16(b.buf[len(b.buf)-2:], batchSubsys) // res_id
	b.finish(h)
}

// header appends a message header and an nfgenmsg; the length is filled
// in by finish. It returns the message's offset.
func (b *batch) header(typ, flags uint16, family byte) int {
	h := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, flags)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, uint32(b.n)+1) // sequence
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0)             // port ID: the kernel's
	b.buf = append(b.buf, family, unix.NFNETLINK_V0, 0, 0)
	b.n++
	return h
}

// finish fills in the length of the message at h.
func (b *batch) finish(h int) {
	binary.NativeEndian.PutUint32(b.buf[h:], uint32(len(b.buf)-h))
	if typ := binary.NativeEndian.Uint16(b.buf[h+4:]); typ != unix.NFNL_MSG_BATCH_BEGIN && typ != unix.NFNL_MSG_BATCH_END {
		b.last = h
	}
}

// attr appends an attribute header for a payload of n bytes and returns
// its offset.
func (b *batch) attr(typ uint16, n int) int {
	a := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(attrHdrLen+n))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	return a
}

// string appends a NUL-terminated string attribute, padded.
func (b *batch) string(typ uint16, s string) {
	b.attr(typ, len(s)+1)
	b.buf = append(b.buf, s...)
	b.buf = append(b.buf, 0)
	b.pad()
}

func (b *batch) pad() {
	for len(b.buf)%4 != 0 {
		b.buf = append(b.buf, 0)
	}
}

// closeNest fills in the length of the nested attribute at a.
func (b *batch) closeNest(a int) error {
	n := len(b.buf) - a
	if n > 0xffff {
		return fmt.Errorf("netlink attribute of %d bytes", n)
	}
	binary.NativeEndian.PutUint16(b.buf[a:], uint16(n))
	return nil
}

// record appends messages recorded from a google/nftables Conn, without
// their batch begin and end.
func (b *batch) record(msgs []netlink.Message) {
	for _, m := range msgs {
		typ := uint16(m.Header.Type)
		if typ == unix.NFNL_MSG_BATCH_BEGIN || typ == unix.NFNL_MSG_BATCH_END {
			continue
		}
		if len(m.Data) < nfgenHdrLen {
			continue // never: every nf_tables message starts with an nfgenmsg
		}
		h := b.header(typ, uint16(m.Header.Flags&^netlink.Acknowledge), m.Data[0])
		b.buf = append(b.buf[:len(b.buf)-nfgenHdrLen], m.Data...)
		b.pad()
		b.finish(h)
	}
}

// elems appends the interval-set elements of spans to set (a start key
// and, unless the range runs to the family's last address, an interval-end
// key one past it), as NEWSETELEM messages, or DELSETELEM when del is set.
// Each message's element list stays under maxElemBytes: its length is a
// 16-bit attribute length. id is the set's transaction ID when the set is
// created in the same batch, else 0.
func (b *batch) elems(set string, id uint32, v4 bool, spans []span, del bool) error {
	typ, flags := uint16(nftMsg|unix.NFT_MSG_NEWSETELEM), uint16(unix.NLM_F_REQUEST|unix.NLM_F_CREATE)
	if del {
		typ, flags = nftMsg|unix.NFT_MSG_DELSETELEM, unix.NLM_F_REQUEST
	}
	per := maxElemBytes / (2 * elemBytes(v4)) // ranges per message
	for len(spans) > 0 {
		chunk := spans[:min(per, len(spans))]
		spans = spans[len(chunk):]
		h := b.header(typ, flags, unix.NFPROTO_INET)
		b.string(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
		b.string(unix.NFTA_SET_ELEM_LIST_SET, set)
		if id != 0 {
			b.attr(unix.NFTA_SET_ELEM_LIST_SET_ID, 4)
			b.buf = binary.BigEndian.AppendUint32(b.buf, id)
		}
		list := b.attr(unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, 0)
		for _, s := range chunk {
			b.elem(s.from, false)
			if end := s.to.Next(); end.IsValid() {
				b.elem(end, true)
			}
		}
		if err := b.closeNest(list); err != nil {
			return fmt.Errorf("set %s: %w", set, err)
		}
		b.finish(h)
	}
	return nil
}

// elem appends one element: NFTA_LIST_ELEM { [NFTA_SET_ELEM_FLAGS],
// NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE } }, elemBytes4 or elemBytes6 bytes
// with the flags.
func (b *batch) elem(a netip.Addr, end bool) {
	klen := 4
	if !a.Is4() {
		klen = 16
	}
	n := 3*attrHdrLen + klen
	if end {
		n += attrHdrLen + 4
	}
	b.attr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, n-attrHdrLen)
	if end {
		b.attr(unix.NFTA_SET_ELEM_FLAGS, 4)
		b.buf = binary.BigEndian.AppendUint32(b.buf, unix.NFT_SET_ELEM_INTERVAL_END)
	}
	b.attr(unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED, attrHdrLen+klen)
	b.attr(unix.NFTA_DATA_VALUE, klen)
	if a.Is4() {
		k := a.As4()
		b.buf = append(b.buf, k[:]...)
	} else {
		k := a.As16()
		b.buf = append(b.buf, k[:]...)
	}
}

// errEmptyBatch: a batch without a message to commit.
var errEmptyBatch = errors.New("empty batch")

// seal ends the batch: only its last message asks for an ack (see
// netlinkCommitter), and the end message closes it. Sealing twice does
// nothing, so a refused batch can be sent again as it is.
func (b *batch) seal() error {
	if b.sealed {
		return nil
	}
	if b.last < 0 {
		return errEmptyBatch
	}
	flags := binary.NativeEndian.Uint16(b.buf[b.last+6:])
	binary.NativeEndian.PutUint16(b.buf[b.last+6:], flags|unix.NLM_F_ACK)
	b.lastSeq = binary.NativeEndian.Uint32(b.buf[b.last+8:])
	b.control(unix.NFNL_MSG_BATCH_END)
	b.sealed = true
	return nil
}

// recorder returns a google/nftables Conn that sends nothing: each Flush
// appends the messages of its batch to *msgs.
func recorder(msgs *[]netlink.Message) (*nftables.Conn, error) {
	return nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		*msgs = append(*msgs, req...)
		return nil, nil
	}))
}

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
