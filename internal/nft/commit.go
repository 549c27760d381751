package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// committer sends a batch to the kernel as one nf_tables transaction and
// returns its outcome: nil when it was committed, else an error wrapping
// the errno (classify) after which nothing of it was. It is the seam
// between building transactions and the kernel: tests wrap it to inject
// failures.
type committer interface {
	commit(*batch) error
}

// netlinkCommitter commits batches on a socket of its own in one
// namespace.
type netlinkCommitter struct {
	socks *sockets
}

// commit seals b and sends it in one sendmsg, which nf_tables processes as
// one transaction, and waits for the outcome. Only the last message asks
// for an ack: the kernel reports every failing message whatever its flags,
// and delivers its answers only after the whole transaction was committed
// or aborted, so the first error means the transaction was aborted whole,
// and the last message's ack that it was committed (a failed commit is
// reported, against the begin message, before any ack).
func (nc netlinkCommitter) commit(b *batch) error {
	if err := b.seal(); err != nil {
		return err
	}
	k, err := nc.socks.kernel()
	if err != nil {
		return err
	}
	defer nc.socks.release(k.Close)
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
				return fmt.Errorf("message %d of %d: %w", m.seq, b.n-2, m.errno)
			}
			if m.seq == b.lastSeq {
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
