package nft

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want errClass
	}{
		// The shapes the package's own requests return.
		{fmt.Errorf("commit: message 3 of 7: %w", unix.EBUSY), classTransient},
		{fmt.Errorf("commit: message 1 of 2: %w", unix.EAGAIN), classTransient},
		{fmt.Errorf("send batch: %w", unix.ENOBUFS), classTransient},
		{fmt.Errorf("receive batch ack: %w", unix.EINTR), classTransient},
		{fmt.Errorf("commit: message 9 of 9: %w", unix.ENOMEM), classTransient},
		{&netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", unix.ENOBUFS)}, classTransient},
		{errors.Join(fmt.Errorf("dump set allow4_a0: %w", unix.EINTR)), classTransient},
		{fmt.Errorf("commit: message 4 of 9: %w", unix.EINVAL), classMalformed},
		{fmt.Errorf("commit: message 4 of 9: %w", unix.ENOENT), classMalformed},
		{fmt.Errorf("commit: message 2 of 9: %w", unix.EEXIST), classMalformed},
		{fmt.Errorf("commit: message 2 of 9: %w", unix.EOPNOTSUPP), classMalformed},
		{fmt.Errorf("commit: message 2 of 9: %w", unix.ERANGE), classMalformed},
		{fmt.Errorf("commit: message 2 of 9: %w", unix.ELOOP), classMalformed},
		{fmt.Errorf("commit: message 2 of 9: %w", unix.EMLINK), classMalformed},
		{fmt.Errorf("list sets: %w", &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", unix.ENOENT)}), classMalformed},
		// Neither: returned, the table left as it is.
		{fmt.Errorf("commit: message 1 of 2: %w", unix.EPERM), classFatal},
		{fmt.Errorf("send batch: %w", unix.EMSGSIZE), classFatal},
		{fmt.Errorf("dial netfilter: %w", unix.EACCES), classFatal},
		{errEmptyBatch, classFatal},
		{errStale, classFatal},
		{errNoAnswer, classFatal},
		{fmt.Errorf("x: %w", ErrMismatch), classFatal},
		{os.ErrDeadlineExceeded, classFatal},
		{nil, classFatal},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestBackoffRetry(t *testing.T) {
	t.Parallel()
	busy := fmt.Errorf("commit: message 1 of 1: %w", unix.EBUSY)
	for _, tc := range []struct {
		name       string
		errs       []error // op's results, in order; nil after the last
		wantCalls  int
		wantSleeps []time.Duration
		wantErr    error
	}{
		{"success", nil, 1, nil, nil},
		{"transient then success", []error{busy, busy}, 3, []time.Duration{10, 20}, nil},
		{"transient throughout", []error{busy, busy, busy, busy, busy, busy}, 5, []time.Duration{10, 20, 40, 40}, busy},
		{"malformed", []error{unix.EINVAL}, 1, nil, unix.EINVAL},
		{"fatal", []error{unix.EPERM}, 1, nil, unix.EPERM},
		{"transient then malformed", []error{busy, unix.ENOENT}, 2, []time.Duration{10}, unix.ENOENT},
	} {
		var sleeps []time.Duration
		b := backoff{attempts: 5, first: 10, limit: 40, sleep: func(d time.Duration) { sleeps = append(sleeps, d) }}
		calls, retried := 0, 0
		err := b.retry(func() error {
			calls++
			if calls <= len(tc.errs) {
				return tc.errs[calls-1]
			}
			return nil
		}, func(error) { retried++ })
		if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
			t.Errorf("%s: retry = %v, want %v", tc.name, err, tc.wantErr)
		}
		if calls != tc.wantCalls || retried != tc.wantCalls-1 {
			t.Errorf("%s: %d calls, %d retried, want %d and %d", tc.name, calls, retried, tc.wantCalls, tc.wantCalls-1)
		}
		if diff := cmp.Diff(tc.wantSleeps, sleeps); diff != "" {
			t.Errorf("%s: sleeps differ (-want +got):\n%s", tc.name, diff)
		}
	}
}
