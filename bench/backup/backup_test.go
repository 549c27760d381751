package backupbench

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/backup"
)

const payload = 32 << 20 // bytes per operation

var (
	keyOnce = sync.OnceValues(backup.GenerateKey)
	ptOnce  = sync.OnceValue(func() []byte {
		b := make([]byte, payload)
		rand.Read(b)
		return b
	})
	encMu  sync.Mutex
	encBuf []byte
)

func key(b *testing.B) *rsa.PrivateKey {
	k, err := keyOnce()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func encrypted(b *testing.B) []byte {
	encMu.Lock()
	defer encMu.Unlock()
	if encBuf == nil {
		var buf bytes.Buffer
		w, err := backup.NewWriter(&buf, &key(b).PublicKey, backup.WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		w.Write(ptOnce())
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		encBuf = buf.Bytes()
	}
	return encBuf
}

// An op processes the payload once and returns the time its measured part
// took.
type op func() (time.Duration, error)

// hmacOp is the reference: HMAC-SHA256 with a 512-bit key over the
// payload, one MAC per segment as the format computes, on one core.
func hmacOp(b *testing.B) op {
	pt := ptOnce()
	m := hmac.New(sha256.New, make([]byte, 64))
	var sum [32]byte
	return func() (time.Duration, error) {
		start := time.Now()
		for seg := range slices.Chunk(pt, backup.SegmentSize) {
			m.Reset()
			m.Write(seg)
			m.Sum(sum[:0])
		}
		return time.Since(start), nil
	}
}

// encryptOp encrypts the payload with conc workers, header included.
func encryptOp(b *testing.B, conc int) op {
	pt, pub := ptOnce(), &key(b).PublicKey
	return func() (time.Duration, error) {
		start := time.Now()
		w, err := backup.NewWriter(io.Discard, pub, backup.WriterOptions{Concurrency: conc})
		if err != nil {
			return 0, err
		}
		if _, err := w.Write(pt); err != nil {
			return 0, err
		}
		err = w.Close()
		return time.Since(start), err
	}
}

// decryptOp decrypts the payload with GOMAXPROCS=procs. It measures the
// body: the RSA unwrap in the header (a few milliseconds per file,
// independent of its size; see BenchmarkUnwrapRSA) is outside the timer.
func decryptOp(b *testing.B, procs int) op {
	enc, priv := encrypted(b), key(b)
	buf := make([]byte, 1<<20)
	return func() (time.Duration, error) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		r, err := backup.NewReader(bytes.NewReader(enc), priv)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		_, err = io.CopyBuffer(io.Discard, r, buf)
		return time.Since(start), err
	}
}

func run(b *testing.B, o op) {
	b.SetBytes(payload)
	var total time.Duration
	for b.Loop() {
		d, err := o()
		if err != nil {
			b.Fatal(err)
		}
		total += d
	}
	b.ReportMetric(float64(payload)*float64(b.N)/total.Seconds()/1e6, "MB/s-measured")
}

func BenchmarkHMACSHA256(b *testing.B) { run(b, hmacOp(b)) }
func BenchmarkEncrypt1(b *testing.B)   { run(b, encryptOp(b, 1)) }
func BenchmarkEncrypt2(b *testing.B)   { run(b, encryptOp(b, 2)) }
func BenchmarkDecrypt1(b *testing.B)   { run(b, decryptOp(b, 1)) }
func BenchmarkDecrypt2(b *testing.B)   { run(b, decryptOp(b, 2)) }

// BenchmarkUnwrapRSA is the per-file cost of opening a moat1 header.
func BenchmarkUnwrapRSA(b *testing.B) {
	enc, priv := encrypted(b), key(b)
	for b.Loop() {
		if _, err := backup.NewReader(bytes.NewReader(enc), priv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRatio interleaves the reference and each codec case for
// several rounds in one run and prints the median throughput per core and
// its ratio to HMAC-SHA256 alone (target: ≥ 0.8). Run it once:
//
//	go test -run '^$' -bench Ratio -benchtime 1x ./bench/backup/
func BenchmarkRatio(b *testing.B) {
	rounds, opsPerRound := 7, 8
	if testing.Short() {
		rounds, opsPerRound = 1, 1
	}
	cases := []struct {
		name  string
		cores int
		op    op
	}{
		{"HMAC-SHA256 alone (reference)", 1, hmacOp(b)},
		{"moat1 encrypt, 1 worker", 1, encryptOp(b, 1)},
		{"moat1 decrypt, 1 worker", 1, decryptOp(b, 1)},
		{"moat1 encrypt, 2 workers", 2, encryptOp(b, 2)},
		{"moat1 decrypt, 2 workers", 2, decryptOp(b, 2)},
	}
	for b.Loop() {
		perCore := make([][]float64, len(cases))
		for range rounds {
			for i, c := range cases {
				var d time.Duration
				for range opsPerRound {
					t, err := c.op()
					if err != nil {
						b.Fatalf("%s: %v", c.name, err)
					}
					d += t
				}
				perCore[i] = append(perCore[i], float64(payload*opsPerRound)/d.Seconds()/1e6/float64(c.cores))
			}
		}
		ref := median(perCore[0])
		var out strings.Builder
		fmt.Fprintf(&out, "\n| case | cores | MB/s per core (median of %d) | ratio to HMAC-SHA256 |\n|---|---|---|---|\n", rounds)
		for i, c := range cases {
			m := median(perCore[i])
			fmt.Fprintf(&out, "| %s | %d | %.0f | %.2f |\n", c.name, c.cores, m, m/ref)
			if i > 0 {
				unit := strings.NewReplacer("moat1 ", "", ", ", "-", " ", "").Replace(c.name) + "/hmac"
				b.ReportMetric(m/ref, unit)
			}
		}
		b.Log(out.String())
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
