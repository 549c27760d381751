package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	c *netlink.Conn
}

func dialKernel(ns netns.NsHandle) (*kernel, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(ns)})
	if err != nil {
		return nil, fmt.Errorf("dial netfilter: %w", err)
	}
	return &kernel{c}, nil
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

// elemTimeout bounds one element lookup.
const elemTimeout = 200 * time.Millisecond

// errNoAnswer: the kernel did not answer an element lookup.
var errNoAnswer = errors.New("no answer to the element lookup")

// hasElem reports whether set holds exactly the element e (same key, same
// interval-end flag).
func (k *kernel) hasElem(set string, e nftables.SetElement) (bool, error) {
	key, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: e.Key}})
	item := []netlink.Attribute{{Type: unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED, Data: key}}
	if e.IntervalEnd {
		item = append(item, netlink.Attribute{Type: unix.NFTA_SET_ELEM_FLAGS, Data: binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END)})
	}
	itemB, _ := netlink.MarshalAttributes(item)
	list, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_LIST_ELEM | unix.NLA_F_NESTED, Data: itemB}})
	data, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_ELEMENTS | unix.NLA_F_NESTED, Data: list},
	})
	if err != nil {
		return false, err
	}
	// Some lookups (an element at the very start of the address space,
	// seen with 0.0.0.0/0 after a narrower set) get no reply from the
	// kernel; a deadline turns that into errNoAnswer and the caller reads
	// the whole set back instead.
	if err := k.c.SetDeadline(time.Now().Add(elemTimeout)); err != nil {
		return false, err
	}
	defer k.c.SetDeadline(time.Time{})
	msgs, err := k.c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request,
		},
		Data: append(nfgen(unix.NFPROTO_INET), data...),
	})
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, errNoAnswer
	}
	if err != nil {
		return false, fmt.Errorf("get element of set %s: %w", set, err)
	}
	for _, m := range msgs {
		m.Header.Type = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM)
		got, err := decodeElems(m)
		if err != nil {
			return false, err
		}
		for _, g := range got {
			if string(g.Key) == string(e.Key) && g.IntervalEnd == e.IntervalEnd {
				return true, nil
			}
		}
	}
	return false, nil
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

func elemOf(a netip.Addr, end bool) nftables.SetElement {
	return nftables.SetElement{Key: a.AsSlice(), IntervalEnd: end}
}

// dumpBuf is the receive buffer for dumps. The kernel sizes each dump
// message after the largest buffer the reader passed to recvmsg (up to
// 32 KiB); a set dump walks the set from its start for every message, so
// large messages make reading a large set several times faster than the
// page-sized reads of mdlayher/netlink.
const dumpBuf = 64 << 10

// elems returns all the elements of set.
func (k *kernel) elems(family byte, set string) ([]nftables.SetElement, error) {
	data, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
	})
	if err != nil {
		return nil, err
	}
	req, err := k.c.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append(nfgen(family), data...),
	})
	if err != nil {
		return nil, fmt.Errorf("dump set %s: %w", set, err)
	}
	rc, err := k.c.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, dumpBuf)
	var out []nftables.SetElement
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
			return nil, fmt.Errorf("dump set %s: %w", set, err)
		}
		raw, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("dump set %s: %w", set, err)
		}
		for _, r := range raw {
			if r.Header.Seq != req.Header.Sequence {
				continue
			}
			switch r.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(r.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(r.Data)); errno != 0 {
						return nil, fmt.Errorf("dump set %s: %w", set, unix.Errno(-errno))
					}
				}
				return out, nil
			}
			got, err := decodeElems(netlink.Message{Data: r.Data})
			if err != nil {
				return nil, fmt.Errorf("dump set %s: %w", set, err)
			}
			out = append(out, got...)
		}
	}
}
