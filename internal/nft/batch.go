package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
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
	buf  []byte
	n    int // messages so far, the begin message included
	last int // offset of the last message's header, -1 if none
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

// commit ends the batch and sends it to ns in one sendmsg, which nf_tables
// processes as one transaction, and waits for the outcome. Only the last
// message asks for an ack: the kernel reports every failing message
// whatever its flags, and delivers its answers only after the whole
// transaction was committed or aborted, so the first error means the
// transaction was aborted whole, and the last message's ack that it was
// committed (a failed commit is reported, against the begin message,
// before any ack).
func (b *batch) commit(ns netns.NsHandle) error {
	if b.last < 0 {
		return errEmptyBatch
	}
	flags := binary.NativeEndian.Uint16(b.buf[b.last+6:])
	binary.NativeEndian.PutUint16(b.buf[b.last+6:], flags|unix.NLM_F_ACK)
	lastSeq := binary.NativeEndian.Uint32(b.buf[b.last+8:])
	b.control(unix.NFNL_MSG_BATCH_END)

	k, err := dialKernel(ns)
	if err != nil {
		return err
	}
	defer closeLater(k.Close)
	if err := setBuffers(k.c, len(b.buf)+len(b.buf)/4+(1<<20), 1<<20); err != nil {
		return err
	}
	rc, err := k.c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		// Errors name the failing message without echoing it back.
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); serr != nil {
			return
		}
		serr = unix.Sendto(int(fd), b.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return fmt.Errorf("receive batch ack: %w", err)
		}
		msgs, err := parseAcks(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.errno != 0 {
				return fmt.Errorf("message %d of %d: %w", m.seq, b.n-1, m.errno)
			}
			if m.seq == lastSeq {
				return nil
			}
		}
	}
}

type ack struct {
	seq   uint32
	errno unix.Errno
}

// parseAcks decodes the NLMSG_ERROR messages in buf.
func parseAcks(buf []byte) ([]ack, error) {
	var out []ack
	for len(buf) >= nlmsgHdrLen {
		n := int(binary.NativeEndian.Uint32(buf))
		if n < nlmsgHdrLen || n > len(buf) {
			return nil, errors.New("malformed netlink message")
		}
		if binary.NativeEndian.Uint16(buf[4:]) == unix.NLMSG_ERROR {
			if n < nlmsgHdrLen+4 {
				return nil, errors.New("short netlink error message")
			}
			errno := int32(binary.NativeEndian.Uint32(buf[nlmsgHdrLen:]))
			out = append(out, ack{binary.NativeEndian.Uint32(buf[8:]), unix.Errno(-errno)})
		}
		buf = buf[min((n+3)&^3, len(buf)):]
	}
	return out, nil
}

// recorder returns a google/nftables Conn that sends nothing: each Flush
// appends the messages of its batch to *msgs.
func recorder(msgs *[]netlink.Message) (*nftables.Conn, error) {
	return nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		*msgs = append(*msgs, req...)
		return nil, nil
	}))
}
