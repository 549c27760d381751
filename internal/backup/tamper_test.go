package backup

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"testing"
)

// checkRejected decodes in (with NewReader and with Decode, one worker and
// several) and checks that it fails with want (any error if want is nil)
// and that every byte returned before the failure is original plaintext
// from segments before firstBad.
func checkRejected(t *testing.T, name string, in, pt []byte, priv *rsa.PrivateKey, firstBad int, want ...error) {
	t.Helper()
	for _, workers := range []int{1, 2} {
		var got []byte
		var err error
		h, herr := readMoat1Header(bytes.NewReader(in))
		if herr != nil {
			err = herr
		} else {
			var r interface{ Read([]byte) (int, error) }
			r, err = newMoat1Reader(bytes.NewReader(in[len(h.raw):]), h, priv, workers)
			if err == nil {
				got, err = readAll(r)
			}
		}
		check(t, fmt.Sprintf("%s (workers=%d)", name, workers), got, err, pt, firstBad, want)
		// The same through io.Copy, which uses the reader's WriteTo.
		if herr == nil {
			r, err := newMoat1Reader(bytes.NewReader(in[len(h.raw):]), h, priv, workers)
			var out bytes.Buffer
			if err == nil {
				_, err = io.Copy(&out, r)
			}
			check(t, fmt.Sprintf("%s (workers=%d, io.Copy)", name, workers), out.Bytes(), err, pt, firstBad, want)
		}
	}
	got, err := decodeAll(in, priv)
	check(t, name+" (Decode)", got, err, pt, firstBad, want)
}

func check(t *testing.T, name string, got []byte, err error, pt []byte, firstBad int, want []error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: decoded %d bytes without error, want error", name, len(got))
		return
	}
	if len(want) > 0 {
		ok := false
		for _, w := range want {
			ok = ok || errors.Is(err, w)
		}
		if !ok {
			t.Errorf("%s: error = %v, want one of %v", name, err, want)
		}
	}
	if limit := firstBad * SegmentSize; len(got) > limit || !bytes.Equal(got, pt[:len(got)]) {
		t.Errorf("%s: returned %d bytes before the error (limit %d, equal to plaintext prefix: %v)",
			name, len(got), limit, len(got) <= len(pt) && bytes.Equal(got, pt[:min(len(got), len(pt))]))
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestTamperMoat1(t *testing.T) {
	t.Parallel()
	const S, T = SegmentSize, tagSize
	priv := testKey(t)
	pt := randBytes(7, 5*S+100) // 6 segments: more than one batch for 2 workers
	enc := encrypt(t, pt, WriterOptions{}, 0)
	h, err := readMoat1Header(bytes.NewReader(enc))
	if err != nil {
		t.Fatal(err)
	}
	H := len(h.raw)
	segOff := func(i int) int { return H + i*(S+T) } // start of segment i
	nseg := 6
	segEnd := func(i int) int { return min(segOff(i+1), len(enc)) }

	t.Run("header byte", func(t *testing.T) {
		t.Parallel()
		for i := range H {
			checkRejected(t, fmt.Sprintf("flip header byte %d", i), flip(enc, i), pt, priv, 0)
		}
	})
	t.Run("body byte", func(t *testing.T) {
		t.Parallel()
		for s := range nseg {
			for _, i := range []int{segOff(s), min(segOff(s)+1000, segEnd(s)-T-1), segEnd(s) - T - 1} {
				checkRejected(t, fmt.Sprintf("flip body byte %d (segment %d)", i, s), flip(enc, i), pt, priv, s, ErrAuth)
			}
		}
	})
	t.Run("tag byte", func(t *testing.T) {
		t.Parallel()
		for s := range nseg {
			for _, i := range []int{segEnd(s) - T, segEnd(s) - 1} {
				checkRejected(t, fmt.Sprintf("flip tag byte %d (segment %d)", i, s), flip(enc, i), pt, priv, s, ErrAuth)
			}
		}
	})
	t.Run("truncation", func(t *testing.T) {
		t.Parallel()
		// At every boundary: inside the header, at its end, and after
		// each non-final segment.
		for _, n := range []int{0, 1, 5, fixedHeaderSize, H - 1, H} {
			checkRejected(t, fmt.Sprintf("truncate to %d (header)", n), enc[:n], pt, priv, 0, ErrTruncated)
		}
		for s := range nseg - 1 {
			checkRejected(t, fmt.Sprintf("truncate after segment %d", s), enc[:segEnd(s)], pt, priv, s+1, ErrTruncated)
		}
		// Inside every segment: around its boundaries, in its tag, and in
		// its middle.
		for s := range nseg {
			for _, n := range []int{segOff(s) + 1, segOff(s) + T - 1, segOff(s) + T, segOff(s) + T + 1,
				min(segOff(s)+1000, segEnd(s)-T-1), segEnd(s) - T - 1, segEnd(s) - T, segEnd(s) - T + 1, segEnd(s) - 1} {
				checkRejected(t, fmt.Sprintf("truncate to %d (segment %d)", n, s), enc[:n], pt, priv, s, ErrTruncated, ErrAuth)
			}
		}
	})
	seg := func(b []byte, i int) []byte { return b[segOff(i):segEnd(i)] }
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	t.Run("reorder", func(t *testing.T) {
		t.Parallel()
		swapped := join(enc[:H], seg(enc, 1), seg(enc, 0), enc[segOff(2):])
		checkRejected(t, "swap segments 0 and 1", swapped, pt, priv, 0, ErrAuth)
		swapped = join(enc[:segOff(3)], seg(enc, 4), seg(enc, 3), seg(enc, 5))
		checkRejected(t, "swap segments 3 and 4", swapped, pt, priv, 3, ErrAuth)
		dup := join(enc[:segOff(2)], seg(enc, 1), enc[segOff(2):])
		checkRejected(t, "duplicate segment 1", dup, pt, priv, 2, ErrAuth)
		drop := join(enc[:segOff(2)], enc[segOff(3):])
		checkRejected(t, "drop segment 2", drop, pt, priv, 2, ErrAuth)
		dupFinal := join(enc, seg(enc, 5))
		checkRejected(t, "repeat final segment", dupFinal, pt, priv, 5, ErrAuth)
		appended := join(enc, []byte{0})
		checkRejected(t, "append a byte", appended, pt, priv, 5, ErrAuth)
	})
	t.Run("other file", func(t *testing.T) {
		t.Parallel()
		other := encrypt(t, pt, WriterOptions{}, 0) // same plaintext, same key
		spliced := join(enc[:segOff(2)], seg(other, 2), enc[segOff(3):])
		checkRejected(t, "segment 2 from another file", spliced, pt, priv, 2, ErrAuth)
		checkRejected(t, "header from another file", join(other[:H], enc[H:]), pt, priv, 0, ErrAuth)
		short := encrypt(t, pt[:S+1], WriterOptions{}, 0)
		checkRejected(t, "final segment from another file", join(enc[:segOff(1)], short[segOff(1):]), pt, priv, 1, ErrAuth)
	})
	t.Run("wrong key", func(t *testing.T) {
		t.Parallel()
		checkRejected(t, "wrong key", enc, pt, otherKey(t), 0, ErrWrongKey)
		// A header naming the right key but wrapping to another.
		var buf bytes.Buffer
		w, err := NewWriter(&buf, &otherKey(t).PublicKey, WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(pt)
		w.Close()
		forged := buf.Bytes()
		fp, _ := KeyFingerprint(&priv.PublicKey)
		copy(forged[len(magicMoat1)+2:], fp[:])
		checkRejected(t, "fingerprint swapped", forged, pt, priv, 0, ErrWrongKey)
	})
	t.Run("compressed", func(t *testing.T) {
		t.Parallel()
		zpt := bytes.Repeat(randBytes(3, 1000), 3*S/1000)
		zenc := encrypt(t, zpt, WriterOptions{Compress: true}, 0)
		checkRejected(t, "compressed: flip last byte", flip(zenc, len(zenc)-1), zpt, priv, 1<<30, ErrAuth)
		checkRejected(t, "compressed: flip flags", flip(zenc, len(magicMoat1)+1), zpt, priv, 0, ErrAuth, ErrFormat)
		checkRejected(t, "compressed: truncate", zenc[:len(zenc)-1], zpt, priv, 1<<30, ErrAuth, ErrTruncated)
	})
}
