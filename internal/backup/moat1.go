package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// The moat1 format.
//
// Header:
//
//	magic        5 bytes  "moat1"
//	version      1 byte   1
//	flags        1 byte   bit 0: body is zstd-compressed; other bits zero
//	fingerprint 32 bytes  SHA-256 of the recipient public key's PKIX DER
//	wrapped len  2 bytes  big-endian length L of the wrapped file key
//	wrapped      L bytes  RSA-OAEP-SHA256(MGF1-SHA256, no label) of
//	                      AES-256 key (32) || HMAC key (64) || nonce prefix (8)
//	header MAC  32 bytes  HMAC-SHA256(HMAC key, all header bytes above)
//
// Body: segments. Every segment but the last holds exactly SegmentSize
// plaintext bytes; the last holds 0..SegmentSize bytes and is empty only
// when the whole plaintext is empty. Segment i is
//
//	ciphertext = AES-256-CTR(AES key, IV = nonce prefix || uint32be(i) || 0x00000000)
//	tag        = HMAC-SHA256(HMAC key, SHA-256(header) || uint64be(i) || final || ciphertext)
//
// where final is one byte, 1 for the last segment and 0 otherwise. The
// low 32 bits of the IV count AES blocks within the segment (a segment
// has at most 4096), so no two segments share a counter value.
const (
	magicMoat1   = "moat1"
	moat1Version = 1

	// SegmentSize is the plaintext size of every moat1 segment but the
	// last. See docs/design/0002-backup-segment-size.md.
	SegmentSize = 64 << 10

	tagSize         = sha256.Size
	flagZstd        = 1 << 0
	fixedHeaderSize = len(magicMoat1) + 1 + 1 + sha256.Size + 2
	maxWrappedSize  = 1024 // an 8192-bit RSA key
	aesKeySize      = 32
	macKeySize      = 64
	noncePrefixSize = 8
	fileKeySize     = aesKeySize + macKeySize + noncePrefixSize
	maxSegments     = 1 << 32
	maxConcurrency  = 16
)

// WriterOptions configures [NewWriter]. The zero value is valid.
type WriterOptions struct {
	// Compress compresses the plaintext with zstd before encryption. The
	// choice is recorded in the (authenticated) header.
	Compress bool
	// Compressed says that what is written is already zstd-compressed
	// (zstd frames, RFC 8878, with a window of at most 64 MiB): the header
	// records a compressed body, as with Compress, but the writer does not
	// compress again. The caller answers for the stream; a reader of a
	// stream that does not decompress fails. Compress must be false.
	Compressed bool
	// Concurrency is how many segments are sealed in parallel. Zero means
	// runtime.GOMAXPROCS(0). Memory use is about 4×Concurrency segments:
	// two batches of 2×Concurrency, one written while the next is sealed.
	Concurrency int
}

// fileKeys holds one file's symmetric keys and the hash of its header.
type fileKeys struct {
	block      cipher.Block
	macKey     []byte
	nonce      [noncePrefixSize]byte
	headerHash [sha256.Size]byte
}

func newFileKeys(material []byte) (*fileKeys, error) {
	if len(material) != fileKeySize {
		return nil, fmt.Errorf("file key is %d bytes, want %d: %w", len(material), fileKeySize, ErrFormat)
	}
	block, err := aes.NewCipher(material[:aesKeySize])
	if err != nil {
		return nil, fmt.Errorf("aes key: %w", err)
	}
	k := &fileKeys{block: block, macKey: append([]byte(nil), material[aesKeySize:aesKeySize+macKeySize]...)}
	copy(k.nonce[:], material[aesKeySize+macKeySize:])
	return k, nil
}

// crypt XORs src into dst with segment index's key stream.
func (k *fileKeys) crypt(index uint64, dst, src []byte) {
	var iv [aes.BlockSize]byte
	copy(iv[:], k.nonce[:])
	binary.BigEndian.PutUint32(iv[noncePrefixSize:], uint32(index))
	cipher.NewCTR(k.block, iv[:]).XORKeyStream(dst, src)
}

// tag appends segment index's tag over ciphertext ct to out.
func (k *fileKeys) tag(mac hash.Hash, index uint64, final bool, ct, out []byte) []byte {
	var b [9]byte
	binary.BigEndian.PutUint64(b[:8], index)
	if final {
		b[8] = 1
	}
	mac.Reset()
	mac.Write(k.headerHash[:])
	mac.Write(b[:])
	mac.Write(ct)
	return mac.Sum(out)
}

func concurrency(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return min(max(n, 1), maxConcurrency)
}

// batchSegments is how many segments one batch holds for n workers.
func batchSegments(n int) int {
	if n == 1 {
		return 1
	}
	return 2 * n
}

// parallel runs f(i) for i in [0, n) on up to workers goroutines, worker w
// handling a contiguous range. f gets the worker number.
func parallel(workers, n int, f func(worker, i int)) {
	parallelWith(workers, n, f, nil)
}

// parallelWith is parallel that also runs meanwhile, if not nil, on the
// calling goroutine while the workers run; it returns when all are done.
// With a single worker everything runs on the calling goroutine, meanwhile
// first: one worker means no parallelism.
func parallelWith(workers, n int, f func(worker, i int), meanwhile func()) {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		if meanwhile != nil {
			meanwhile()
		}
		for i := range n {
			f(0, i)
		}
		return
	}
	var wg sync.WaitGroup
	per := (n + workers - 1) / workers
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, n)
		if lo >= hi {
			break
		}
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				f(w, i)
			}
		})
	}
	if meanwhile != nil {
		meanwhile()
	}
	wg.Wait()
}

func newMACs(key []byte, n int) []hash.Hash {
	macs := make([]hash.Hash, n)
	for i := range macs {
		macs[i] = hmac.New(sha256.New, key)
	}
	return macs
}

// NewWriter returns a writer that encrypts what is written to it to pub in
// the moat1 format and writes the result to dst. The header is written
// before NewWriter returns. Close must be called to write the final
// segment; it does not close dst.
func NewWriter(dst io.Writer, pub *rsa.PublicKey, opts WriterOptions) (io.WriteCloser, error) {
	if opts.Compress && opts.Compressed {
		return nil, errors.New("new moat1 writer: Compress and Compressed are exclusive")
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("new moat1 writer: %w", err)
	}
	fp, err := KeyFingerprint(pub)
	if err != nil {
		return nil, fmt.Errorf("new moat1 writer: %w", err)
	}
	material := make([]byte, fileKeySize)
	if _, err := rand.Read(material); err != nil {
		return nil, fmt.Errorf("new moat1 writer: file key: %w", err)
	}
	keys, err := newFileKeys(material)
	if err != nil {
		return nil, fmt.Errorf("new moat1 writer: %w", err)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, material, nil)
	clear(material)
	if err != nil {
		return nil, fmt.Errorf("new moat1 writer: wrap file key: %w", err)
	}
	var flags byte
	if opts.Compress || opts.Compressed {
		flags |= flagZstd
	}
	hdr := make([]byte, 0, fixedHeaderSize+len(wrapped)+tagSize)
	hdr = append(hdr, magicMoat1...)
	hdr = append(hdr, moat1Version, flags)
	hdr = append(hdr, fp[:]...)
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(wrapped)))
	hdr = append(hdr, wrapped...)
	hm := hmac.New(sha256.New, keys.macKey)
	hm.Write(hdr)
	hdr = hm.Sum(hdr)
	keys.headerHash = sha256.Sum256(hdr)
	if _, err := dst.Write(hdr); err != nil {
		return nil, fmt.Errorf("write moat1 header: %w", err)
	}

	workers := concurrency(opts.Concurrency)
	batch := batchSegments(workers)
	w := &segmentWriter{
		dst:   dst,
		keys:  keys,
		macs:  newMACs(keys.macKey, workers),
		batch: batch,
	}
	w.bufs[0] = make([]byte, batch*(SegmentSize+tagSize))
	if !opts.Compress {
		return w, nil
	}
	// With two or more workers the encoder runs in two stages, match
	// finding and entropy coding, each on its own goroutine. More would
	// need independent jobs of 4× the window (32 MiB each) in memory, for
	// no gain on a base backup of 2 cores: pg_basebackup's stream is then
	// the limit.
	enc, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(min(workers, 2)), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("new moat1 writer: zstd: %w", err)
	}
	return &compressWriter{enc: enc, seg: w}, nil
}

// segmentWriter buffers up to batch segments of plaintext, laid out with
// room for each segment's tag after it, and seals them in place, in
// parallel. It has two such buffers: a sealed batch is written to dst while
// the next one is being sealed, during the next flush. Only Write and Close
// touch dst, and no goroutine outlives a call.
type segmentWriter struct {
	dst     io.Writer
	keys    *fileKeys
	macs    []hash.Hash
	bufs    [2][]byte // batch × (SegmentSize + tagSize) each; bufs[1] made when needed
	cur     int       // bufs[cur] is the batch being filled
	pending []byte    // sealed batch not yet written, in bufs[1-cur]
	batch   int
	n       int    // plaintext bytes buffered
	index   uint64 // index of the first buffered segment
	err     error
}

func (w *segmentWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	total := 0
	for len(p) > 0 {
		if w.n == w.batch*SegmentSize {
			// More data follows, so none of the buffered segments is final.
			if err := w.flush(nil, false); err != nil {
				return total, err
			}
		}
		if full := w.batch * SegmentSize; w.n == 0 && len(p) > full {
			// A whole batch, not the last: encrypt straight from p,
			// saving a copy.
			w.n = full
			if err := w.flush(p[:full], false); err != nil {
				return total, err
			}
			p = p[full:]
			total += full
			continue
		}
		buf := w.bufs[w.cur]
		seg, off := w.n/SegmentSize, w.n%SegmentSize
		c := copy(buf[seg*(SegmentSize+tagSize)+off:seg*(SegmentSize+tagSize)+SegmentSize], p)
		w.n += c
		p = p[c:]
		total += c
	}
	return total, nil
}

// flush seals the buffered segments, the last final if final, while it
// writes the batch sealed by the previous flush. The final batch is
// written before flush returns; any other is left pending. The plaintext
// is in the buffer, or in src if it is not nil.
func (w *segmentWriter) flush(src []byte, final bool) error {
	segs := (w.n + SegmentSize - 1) / SegmentSize
	if segs == 0 {
		segs = 1 // the empty final segment of an empty file
	}
	if w.index+uint64(segs) > maxSegments {
		w.err = errors.New("moat1: too many segments")
		return w.err
	}
	buf, end := w.bufs[w.cur], 0
	var writePending func()
	var werr error
	if pending := w.pending; len(pending) > 0 {
		writePending = func() { _, werr = w.dst.Write(pending) }
	}
	parallelWith(len(w.macs), segs, func(worker, i int) {
		ptLen := min(w.n-i*SegmentSize, SegmentSize)
		off := i * (SegmentSize + tagSize)
		ct := buf[off : off+ptLen]
		pt := ct
		if src != nil {
			pt = src[i*SegmentSize : i*SegmentSize+ptLen]
		}
		idx := w.index + uint64(i)
		w.keys.crypt(idx, ct, pt)
		w.keys.tag(w.macs[worker], idx, final && i == segs-1, ct, ct[len(ct):])
		if i == segs-1 {
			end = off + ptLen + tagSize
		}
	}, writePending)
	w.index += uint64(segs)
	w.n = 0
	w.pending = nil
	if werr != nil {
		w.err = fmt.Errorf("write moat1 segment: %w", werr)
		return w.err
	}
	if final {
		if _, err := w.dst.Write(buf[:end]); err != nil {
			w.err = fmt.Errorf("write moat1 segment: %w", err)
			return w.err
		}
		return nil
	}
	w.pending = buf[:end]
	w.cur = 1 - w.cur
	if w.bufs[w.cur] == nil {
		w.bufs[w.cur] = make([]byte, len(buf))
	}
	return nil
}

func (w *segmentWriter) Close() error {
	if w.err != nil {
		if errors.Is(w.err, errClosed) {
			return nil
		}
		return w.err
	}
	if err := w.flush(nil, true); err != nil {
		return err
	}
	w.err = errClosed
	return nil
}

var errClosed = errors.New("moat1: write to closed writer")

// compressWriter compresses into a segmentWriter. With more than one
// worker the encoder compresses a block in the background while the next
// one fills, and a second goroutine entropy-codes and writes the block
// before it to seg, one write at a time. seg is therefore touched only by
// the encoder until enc.Close (or Reset) has waited for both.
type compressWriter struct {
	enc    *zstd.Encoder
	seg    *segmentWriter
	err    error // sticky: the first error, or errClosed
	closed bool
}

func (w *compressWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.enc.Write(p)
	if err != nil {
		w.err = fmt.Errorf("zstd: %w", err)
	}
	return n, w.err
}

// ReadFrom reads r into the encoder's block buffer, saving io.Copy's copy.
// An error from r is returned as it is.
func (w *compressWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	src := &errReader{r: r}
	n, err := w.enc.ReadFrom(src)
	switch {
	case err == nil:
	case src.err != nil && errors.Is(err, src.err):
		w.err = err
	default:
		w.err = fmt.Errorf("zstd: %w", err)
	}
	return n, w.err
}

func (w *compressWriter) Close() error {
	if w.closed {
		if errors.Is(w.err, errClosed) {
			return nil
		}
		return w.err
	}
	w.closed = true
	if w.err == nil {
		if err := w.enc.Close(); err != nil {
			w.err = fmt.Errorf("zstd: %w", err)
		}
	}
	if w.err != nil {
		w.enc.Reset(nil) // waits for the encoder's goroutines
		return w.err
	}
	if err := w.seg.Close(); err != nil {
		w.err = err
		return err
	}
	w.err = errClosed
	return nil
}

// errReader remembers the error, other than io.EOF, that r returned.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// moat1Header is a parsed (not yet authenticated) moat1 header.
type moat1Header struct {
	raw         []byte // every header byte, MAC included
	flags       byte
	fingerprint Fingerprint
	wrapped     []byte
	mac         []byte
}

// readMoat1Header reads and parses a header. It checks structure only.
func readMoat1Header(r io.Reader) (*moat1Header, error) {
	fixed := make([]byte, fixedHeaderSize)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return nil, readErr("moat1 header", err)
	}
	if string(fixed[:len(magicMoat1)]) != magicMoat1 {
		return nil, fmt.Errorf("moat1 header: bad magic: %w", ErrFormat)
	}
	if v := fixed[len(magicMoat1)]; v != moat1Version {
		return nil, fmt.Errorf("moat1 header: unsupported version %d: %w", v, ErrFormat)
	}
	h := &moat1Header{flags: fixed[len(magicMoat1)+1]}
	if h.flags&^flagZstd != 0 {
		return nil, fmt.Errorf("moat1 header: unknown flags %#x: %w", h.flags, ErrFormat)
	}
	copy(h.fingerprint[:], fixed[len(magicMoat1)+2:])
	n := int(binary.BigEndian.Uint16(fixed[fixedHeaderSize-2:]))
	if n == 0 || n > maxWrappedSize {
		return nil, fmt.Errorf("moat1 header: wrapped key length %d: %w", n, ErrFormat)
	}
	rest := make([]byte, n+tagSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		return nil, readErr("moat1 header", err)
	}
	h.raw = append(fixed, rest...)
	h.wrapped = h.raw[fixedHeaderSize : fixedHeaderSize+n]
	h.mac = h.raw[fixedHeaderSize+n:]
	return h, nil
}

// readErr wraps a read error, mapping a premature end to ErrTruncated.
func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: %w", what, ErrTruncated)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// NewReader returns a reader of the plaintext of the moat1 stream src,
// which must be encrypted to priv's public key. It reads and authenticates
// the header before returning. Read returns only plaintext whose segment
// tag has verified; it returns an error wrapping [ErrAuth], [ErrTruncated]
// or [ErrFormat] when the body is not exactly what the writer produced.
//
// Segments are verified in batches of up to 2×GOMAXPROCS, in parallel; no
// byte of a batch is returned until every segment in it has verified.
func NewReader(src io.Reader, priv *rsa.PrivateKey) (io.Reader, error) {
	h, err := readMoat1Header(src)
	if err != nil {
		return nil, err
	}
	return newMoat1Reader(src, h, priv, 0)
}

// HeaderSize bounds the size of a moat1 header: a prefix of a file this
// long always holds the whole header.
const HeaderSize = fixedHeaderSize + maxWrappedSize + tagSize

// HeaderDigest returns the SHA-256 of the moat1 header at the start of
// r. Every segment tag of a moat1 file binds its header, under a MAC key
// only the private key unwraps, so a digest of the header stands for the
// whole file: whoever pins it (package archive, in a record MACed with a
// key the writer of a forgery does not hold) pins the file's content,
// which [NewPinnedReader] then checks as it reads.
func HeaderDigest(r io.Reader) ([32]byte, error) {
	h, err := readMoat1Header(r)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(h.raw), nil
}

// NewPinnedReader is [NewReader] for a file whose header must have the
// digest header (see [HeaderDigest]). A different header is an error
// wrapping [ErrAuth], before anything is unwrapped or released; the
// segments then verify under that header as NewReader's do.
func NewPinnedReader(src io.Reader, priv *rsa.PrivateKey, header [32]byte) (io.Reader, error) {
	h, err := readMoat1Header(src)
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(h.raw); subtle.ConstantTimeCompare(got[:], header[:]) != 1 {
		return nil, fmt.Errorf("moat1 header: not the file recorded for this object: %w", ErrAuth)
	}
	return newMoat1Reader(src, h, priv, 0)
}

func newMoat1Reader(src io.Reader, h *moat1Header, priv *rsa.PrivateKey, workers int) (io.Reader, error) {
	if priv == nil {
		return nil, errors.New("moat1: no private key")
	}
	fp, err := KeyFingerprint(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("moat1 header: %w", err)
	}
	if subtle.ConstantTimeCompare(fp[:], h.fingerprint[:]) != 1 {
		return nil, fmt.Errorf("moat1 header: file is for key %v, have %v: %w", h.fingerprint, fp, ErrWrongKey)
	}
	material, err := rsa.DecryptOAEP(sha256.New(), nil, priv, h.wrapped, nil)
	if err != nil {
		return nil, fmt.Errorf("moat1 header: unwrap file key: %w", ErrWrongKey)
	}
	keys, err := newFileKeys(material)
	clear(material)
	if err != nil {
		return nil, fmt.Errorf("moat1 header: %w", err)
	}
	hm := hmac.New(sha256.New, keys.macKey)
	hm.Write(h.raw[:len(h.raw)-tagSize])
	if !hmac.Equal(hm.Sum(nil), h.mac) {
		return nil, fmt.Errorf("moat1 header: %w", ErrAuth)
	}
	keys.headerHash = sha256.Sum256(h.raw)

	workers = concurrency(workers)
	batch := batchSegments(workers)
	r := &segmentReader{
		src:   src,
		keys:  keys,
		macs:  newMACs(keys.macKey, workers),
		buf:   make([]byte, batch*(SegmentSize+tagSize)+1),
		batch: batch,
	}
	if h.flags&flagZstd == 0 {
		return r, nil
	}
	dec, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(64<<20),
		zstd.WithDecoderMaxMemory(1<<40))
	if err != nil {
		return nil, fmt.Errorf("moat1: zstd: %w", err)
	}
	return &decompressReader{dec: dec}, nil
}

// segmentReader verifies and decrypts moat1 segments, one batch at a time.
type segmentReader struct {
	src      io.Reader
	keys     *fileKeys
	macs     []hash.Hash
	buf      []byte // batch × (SegmentSize + tagSize) + 1 lookahead byte
	batch    int
	carry    int      // 1 if the lookahead byte of the last batch is pending
	index    uint64   // index of the next segment
	segs     [][]byte // verified plaintext not yet returned
	segStore [][]byte // per-segment plaintext of the current batch
	done     bool
	err      error
}

func (r *segmentReader) Read(p []byte) (int, error) {
	for len(r.segs) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := 0
	for len(p) > 0 && len(r.segs) > 0 {
		c := copy(p, r.segs[0])
		n += c
		p = p[c:]
		if r.segs[0] = r.segs[0][c:]; len(r.segs[0]) == 0 {
			r.segs = r.segs[1:]
		}
	}
	return n, nil
}

// WriteTo writes the verified plaintext to w straight from the decrypted
// batch, without a copy through a caller's buffer (io.Copy uses it). Like
// Read, it releases no segment before its tag verifies.
func (r *segmentReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		for len(r.segs) > 0 {
			n, err := w.Write(r.segs[0])
			total += int64(n)
			if err != nil {
				r.segs[0] = r.segs[0][n:]
				return total, err
			}
			r.segs = r.segs[1:]
		}
		switch {
		case r.err != nil:
			return total, r.err
		case r.done:
			return total, nil
		}
		if err := r.next(); err != nil {
			r.err = err
			return total, err
		}
	}
}

// next reads, verifies and decrypts the next batch of segments.
func (r *segmentReader) next() error {
	if r.carry == 1 {
		r.buf[0] = r.buf[len(r.buf)-1]
	}
	n, err := io.ReadFull(r.src, r.buf[r.carry:])
	have := r.carry + n
	eof := false
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		eof = true
	default:
		return fmt.Errorf("read moat1 segment %d: %w", r.index, err)
	}
	r.carry = 0
	var segs int
	lastLen := SegmentSize + tagSize // length of the last chunk
	if !eof {
		// A byte follows the batch, so no segment in it is final.
		r.carry = 1
		segs = r.batch
	} else {
		if have == 0 {
			return fmt.Errorf("moat1 segment %d: stream ends without a final segment: %w", r.index, ErrTruncated)
		}
		segs = (have + SegmentSize + tagSize - 1) / (SegmentSize + tagSize)
		lastLen = have - (segs-1)*(SegmentSize+tagSize)
		if lastLen < tagSize {
			return fmt.Errorf("moat1 segment %d: %d bytes, shorter than a tag: %w", r.index+uint64(segs-1), lastLen, ErrTruncated)
		}
	}
	if r.index+uint64(segs) > maxSegments {
		return fmt.Errorf("moat1 segment %d: too many segments: %w", r.index, ErrFormat)
	}
	if r.segStore == nil {
		r.segStore = make([][]byte, r.batch)
	}
	bad := make([]bool, segs)
	parallel(len(r.macs), segs, func(worker, i int) {
		off := i * (SegmentSize + tagSize)
		l := SegmentSize + tagSize
		final := false
		if i == segs-1 {
			l, final = lastLen, eof
		}
		ct, tag := r.buf[off:off+l-tagSize], r.buf[off+l-tagSize:off+l]
		var sum [tagSize]byte
		idx := r.index + uint64(i)
		if !hmac.Equal(r.keys.tag(r.macs[worker], idx, final, ct, sum[:0]), tag) {
			bad[i] = true
			return
		}
		r.keys.crypt(idx, ct, ct)
		r.segStore[i] = ct
	})
	for i, b := range bad {
		if !b {
			continue
		}
		idx := r.index + uint64(i)
		if eof && i == segs-1 && lastLen == SegmentSize+tagSize {
			// A full segment at the end: was it a non-final one, cut after?
			off := i * (SegmentSize + tagSize)
			ct, tag := r.buf[off:off+SegmentSize], r.buf[off+SegmentSize:off+SegmentSize+tagSize]
			var sum [tagSize]byte
			if hmac.Equal(r.keys.tag(r.macs[0], idx, false, ct, sum[:0]), tag) {
				return fmt.Errorf("moat1 segment %d: stream ends after a non-final segment: %w", idx, ErrTruncated)
			}
		}
		if eof && i == segs-1 {
			return fmt.Errorf("moat1 segment %d (last in stream): modified or truncated: %w", idx, ErrAuth)
		}
		return fmt.Errorf("moat1 segment %d: %w", idx, ErrAuth)
	}
	r.index += uint64(segs)
	r.segs = r.segs[:0]
	for _, s := range r.segStore[:segs] {
		if len(s) > 0 {
			r.segs = append(r.segs, s)
		}
	}
	r.done = eof
	return nil
}

type decompressReader struct {
	dec *zstd.Decoder
	err error
}

func (r *decompressReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	if err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, ErrAuth) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrFormat) {
			err = fmt.Errorf("zstd: %w", err)
		}
		r.err = err
		r.dec.Close()
	}
	return n, err
}
