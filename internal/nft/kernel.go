package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Requests google/nftables v0.3.0 has no call for: the ruleset generation
// and single set elements. They are read on a plain netlink socket.

// kernel is a netlink socket to nf_tables in one namespace.
type kernel struct {
	c   *netlink.Conn
	buf []byte // receive buffer, dumpBuf bytes
}

func dialKernel(ns netns.NsHandle) (*kernel, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(ns)})
	if err != nil {
		return nil, fmt.Errorf("dial netfilter: %w", err)
	}
	return &kernel{c: c}, nil
}

func (k *kernel) Close() error { return k.c.Close() }

func nfgen(family byte) []byte { return []byte{family, unix.NFNETLINK_V0, 0, 0} }

// gen returns the namespace's ruleset generation: it changes with every
// committed nf_tables transaction, whoever made it.
func (k *kernel) gen() (uint32, error) {
	msgs, err := k.c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags: netlink.Request,
		},
		Data: nfgen(unix.AF_UNSPEC),
	})
	if err != nil {
		return 0, fmt.Errorf("get ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("get ruleset generation: no generation in reply")
}

// elemTimeout bounds one element lookup. The kernel answers in
// microseconds; the deadline is a safety net, not a code path.
const elemTimeout = 200 * time.Millisecond

// errNoAnswer: the kernel did not answer an element lookup in time.
var errNoAnswer = errors.New("no answer to the element lookup")

// hasElem reports whether set holds exactly the element e (same key, same
// interval-end flag).
//
// The request carries NLM_F_ACK and the reply is read up to that ack. The
// kernel's answer to a GETSETELEM is not always an element or an error:
// since nft_set_rbtree's get command moved to a binary search over its
// interval array (Linux 6.18, commit 2aa34191f06f), an interval-end lookup
// of a key inside an open-ended range (one with no end element: 0.0.0.0/0,
// or any range reaching the family's last address) matches that range and
// the handler returns success without emitting an element. Netlink only
// acknowledges a successful request when asked to, so without NLM_F_ACK
// nothing at all came back and a blocking read waited forever. With the
// ack, "no element before the ack" is the answer: the set has no such
// element (an end element at that key would have closed the range there,
// and the kernel would have returned it).
func (k *kernel) hasElem(set string, e nftables.SetElement) (bool, error) {
	found := false
	err := k.roundTrip(getElemRequest(set, e), elemTimeout, func(m syscall.NetlinkMessage) error {
		got, err := decodeElems(netlink.Message{Data: m.Data})
		if err != nil {
			return err
		}
		for _, g := range got {
			if string(g.Key) == string(e.Key) && g.IntervalEnd == e.IntervalEnd {
				found = true
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("get element of set %s: %w", set, err)
	}
	return found, nil
}

// getElemRequest is a GETSETELEM for the single element e of set, asking
// for an ack.
func getElemRequest(set string, e nftables.SetElement) netlink.Message {
	key, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: e.Key}})
	item := []netlink.Attribute{{Type: unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED, Data: key}}
	if e.IntervalEnd {
		item = append(item, netlink.Attribute{Type: unix.NFTA_SET_ELEM_FLAGS, Data: binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END)})
	}
	itemB, _ := netlink.MarshalAttributes(item)
	list, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: itemB}})
	data, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: list},
	})
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(nfgen(unix.NFPROTO_INET), data...),
	}
}

// roundTrip sends req (which must ask for an ack or be a dump) and passes
// every reply message for it to fn, until the ack, an error or the end of
// the dump. A zero timeout waits as long as it takes.
func (k *kernel) roundTrip(req netlink.Message, timeout time.Duration, fn func(syscall.NetlinkMessage) error) error {
	if timeout > 0 {
		if err := k.c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		defer k.c.SetDeadline(time.Time{})
	}
	sent, err := k.c.Send(req)
	if err != nil {
		return err
	}
	rc, err := k.c.SyscallConn()
	if err != nil {
		return err
	}
	if k.buf == nil {
		k.buf = make([]byte, dumpBuf)
	}
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), k.buf, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errNoAnswer
			}
			return err
		}
		raw, err := syscall.ParseNetlinkMessage(k.buf[:n])
		if err != nil {
			return err
		}
		for _, r := range raw {
			if r.Header.Seq != sent.Header.Sequence {
				continue // a late answer to an earlier request
			}
			switch r.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(r.Data) < 4 {
					return errors.New("short netlink error message")
				}
				if errno := int32(binary.NativeEndian.Uint32(r.Data)); errno != 0 {
					return unix.Errno(-errno)
				}
				return nil
			}
			if err := fn(r); err != nil {
				return err
			}
		}
	}
}

// decodeElems decodes the elements of a NEWSETELEM message.
func decodeElems(m netlink.Message) ([]nftables.SetElement, error) {
	if len(m.Data) < 4 {
		return nil, errors.New("short set element message")
	}
	var out []nftables.SetElement
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				var e nftables.SetElement
				list.Nested(func(item *netlink.AttributeDecoder) error {
					for item.Next() {
						switch item.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							item.Nested(func(v *netlink.AttributeDecoder) error {
								for v.Next() {
									if v.Type() == unix.NFTA_DATA_VALUE {
										e.Key = v.Bytes()
									}
								}
								return nil
							})
						case unix.NFTA_SET_ELEM_FLAGS:
							e.IntervalEnd = item.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
						}
					}
					return nil
				})
				out = append(out, e)
			}
			return nil
		})
	}
	return out, ad.Err()
}

// dumpBuf is the receive buffer for dumps. The kernel sizes each dump
// message after the largest buffer the reader passed to recvmsg (up to
// 32 KiB); a set dump walks the set from its start for every message, so
// large messages make reading a large set several times faster than the
// page-sized reads of mdlayher/netlink.
const dumpBuf = 64 << 10

// elems returns all the elements of set, decoded straight from the
// receive buffer (a 100,000-prefix set is 200,000 elements).
func (k *kernel) elems(family byte, set string) ([]elem, error) {
	var out []elem
	err := k.dumpElems(family, set, func(e elem, _ string) { out = append(out, e) })
	return out, err
}

// mapElems returns all the elements of the verdict map set.
func (k *kernel) mapElems(family byte, set string) ([]mapElem, error) {
	var out []mapElem
	err := k.dumpElems(family, set, func(e elem, chain string) { out = append(out, mapElem{e.key, e.end, chain}) })
	return out, err
}

// dumpElems calls fn with every element of set, and the chain its
// verdict jumps to if it has one.
func (k *kernel) dumpElems(family byte, set string, fn func(e elem, chain string)) error {
	data, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
	})
	if err != nil {
		return err
	}
	err = k.roundTrip(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append(nfgen(family), data...),
	}, 0, func(m syscall.NetlinkMessage) error {
		if len(m.Data) < 4 {
			return errors.New("short set element message")
		}
		return eachAttr(m.Data[4:], func(typ uint16, v []byte) error {
			if typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				return nil
			}
			return eachAttr(v, func(_ uint16, item []byte) error {
				var e elem
				var chain string
				err := eachAttr(item, func(typ uint16, v []byte) error {
					switch typ {
					case unix.NFTA_SET_ELEM_KEY:
						return eachAttr(v, func(typ uint16, v []byte) error {
							if typ != unix.NFTA_DATA_VALUE {
								return nil
							}
							a, ok := netip.AddrFromSlice(v)
							if !ok {
								return fmt.Errorf("bad element key %x", v)
							}
							e.key = a
							return nil
						})
					case unix.NFTA_SET_ELEM_FLAGS:
						if len(v) != 4 {
							return errors.New("bad element flags")
						}
						e.end = binary.BigEndian.Uint32(v)&unix.NFT_SET_ELEM_INTERVAL_END != 0
					case unix.NFTA_SET_ELEM_DATA:
						return eachAttr(v, func(typ uint16, v []byte) error {
							if typ != unix.NFTA_DATA_VERDICT {
								return nil
							}
							return eachAttr(v, func(typ uint16, v []byte) error {
								if typ == unix.NFTA_VERDICT_CHAIN {
									chain = strings.TrimRight(string(v), "\x00")
								}
								return nil
							})
						})
					}
					return nil
				})
				if err == nil && !e.key.IsValid() {
					err = errors.New("element without a key")
				}
				fn(e, chain)
				return err
			})
		})
	})
	if err != nil {
		return fmt.Errorf("dump set %s: %w", set, err)
	}
	return nil
}

// eachAttr calls fn with the type (without the nested and byte-order
// flags) and the payload of every netlink attribute in b.
func eachAttr(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b))
		if n < 4 || n > len(b) {
			return errors.New("malformed netlink attribute")
		}
		if err := fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[4:n]); err != nil {
			return err
		}
		n = (n + 3) &^ 3
		if n > len(b) {
			n = len(b)
		}
		b = b[n:]
	}
	if len(b) != 0 {
		return errors.New("trailing bytes after netlink attributes")
	}
	return nil
}
