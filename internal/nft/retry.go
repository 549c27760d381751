package nft

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// errClass is what a failed netlink request says about the table, decided
// by its errno (classify).
type errClass int

const (
	// classFatal: neither a passing condition nor a sign of a malformed
	// table (EPERM, EMSGSIZE, an error without an errno, ...). The error
	// is returned; the table is left as it is. A refused transaction
	// commits nothing, so that is the table as it was before.
	classFatal errClass = iota
	// classTransient: the kernel or the socket could not take the
	// request now (EAGAIN, EBUSY, EINTR, ENOBUFS, ENOMEM). It is retried
	// with a bounded backoff and never makes the table be recreated.
	classTransient
	// classMalformed: the kernel refused the request for what the table
	// holds or lacks (EINVAL, ENOENT, EEXIST, EOPNOTSUPP, ...): the table
	// is not the one this package wrote, or is missing. Only this class
	// makes a full write replace the table whole (in one transaction).
	classMalformed
)

func (c errClass) String() string {
	switch c {
	case classTransient:
		return "transient"
	case classMalformed:
		return "malformed"
	}
	return "fatal"
}

// classify returns the class of err by the errno it wraps.
func classify(err error) errClass {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return classFatal
	}
	switch errno {
	case unix.EAGAIN, unix.EBUSY, unix.EINTR, unix.ENOBUFS, unix.ENOMEM:
		return classTransient
	case unix.EINVAL, unix.ENOENT, unix.EEXIST, unix.EOPNOTSUPP, unix.ERANGE, unix.ELOOP, unix.EMLINK:
		// ELOOP and EMLINK: a jump loop, or jumps too deep, through
		// chains that are not ours.
		return classMalformed
	}
	return classFatal
}

// backoff is the retry schedule for transient failures: at most attempts
// tries, the waits between them doubling from first up to limit.
type backoff struct {
	attempts     int
	first, limit time.Duration
	// sleep waits; time.Sleep unless a test shortens it.
	sleep func(time.Duration)
}

// defaultBackoff tries 5 times over ~150 ms in all: transient errors
// (a busy commit mutex, a full socket buffer) pass within milliseconds.
func defaultBackoff() backoff {
	return backoff{attempts: 5, first: 10 * time.Millisecond, limit: 80 * time.Millisecond, sleep: time.Sleep}
}

// retry calls op until it returns nil or an error whose class is not
// transient, at most b.attempts times, and returns op's last error.
// retried, when not nil, is called before each retry.
func (b backoff) retry(op func() error, retried func(error)) error {
	wait := b.first
	for i := 1; ; i++ {
		err := op()
		if err == nil || classify(err) != classTransient || i >= b.attempts {
			return err
		}
		if retried != nil {
			retried(err)
		}
		b.sleep(wait)
		wait = min(2*wait, b.limit)
	}
}
