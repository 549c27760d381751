package backupbench

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moatdb/moat/internal/backup"
)

const payload = 32 << 20 // bytes per benchmark op

var (
	keyOnce = sync.OnceValues(backup.GenerateKey)
	ptOnce  = sync.OnceValue(func() []byte {
		b := make([]byte, payload)
		rand.Read(b)
		return b
	})
	encOnce sync.Map // concurrency → encrypted payload
)

func key(b *testing.B) *rsa.PrivateKey {
	k, err := keyOnce()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func encrypted(b *testing.B) []byte {
	if v, ok := encOnce.Load(0); ok {
		return v.([]byte)
	}
	var buf bytes.Buffer
	w, err := backup.NewWriter(&buf, &key(b).PublicKey, backup.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	w.Write(ptOnce())
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	encOnce.Store(0, buf.Bytes())
	return buf.Bytes()
}

// benchHMAC is the reference: HMAC-SHA256 with a 512-bit key over the
// payload, one MAC per 64 KiB segment as the format computes, one core.
func benchHMAC(b *testing.B) {
	pt := ptOnce()
	mk := make([]byte, 64)
	m := hmac.New(sha256.New, mk)
	var sum [32]byte
	b.SetBytes(payload)
	b.ResetTimer()
	for b.Loop() {
		for seg := range slices.Chunk(pt, backup.SegmentSize) {
			m.Reset()
			m.Write(seg)
			m.Sum(sum[:0])
		}
	}
}

func benchEncrypt(conc int) func(*testing.B) {
	return func(b *testing.B) {
		pt, pub := ptOnce(), &key(b).PublicKey
		b.SetBytes(payload)
		b.ResetTimer()
		for b.Loop() {
			w, err := backup.NewWriter(io.Discard, pub, backup.WriterOptions{Concurrency: conc})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Write(pt); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// benchDecrypt measures the body: the RSA unwrap of the header (a few
// milliseconds per file, independent of its size) is outside the timer.
// The reader's parallelism follows GOMAXPROCS (go test -cpu).
func benchDecrypt(b *testing.B) {
	enc, priv := encrypted(b), key(b)
	buf := make([]byte, 1<<20)
	b.SetBytes(payload)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		r, err := backup.NewReader(bytes.NewReader(enc), priv)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHMACSHA256(b *testing.B)  { benchHMAC(b) }
func BenchmarkEncrypt1(b *testing.B)    { benchEncrypt(1)(b) }
func BenchmarkEncrypt2(b *testing.B)    { benchEncrypt(2)(b) }
func BenchmarkDecrypt(b *testing.B)     { benchDecrypt(b) }
func BenchmarkUnwrapRSA(b *testing.B) { // the per-file header cost
	enc, priv := encrypted(b), key(b)
	for b.Loop() {
		if _, err := backup.NewReader(bytes.NewReader(enc), priv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRatio runs the reference and the codec alternately, rounds
// times, and prints median throughput per core and its ratio to
// HMAC-SHA256 alone. Run it with -benchtime=1x: each round already runs
// every case for the default one second (inner -test.benchtime is shared,
// so use -benchtime=1x only, not a duration).
func BenchmarkRatio(b *testing.B) {
	rounds := 5
	if testing.Short() {
		rounds = 1
	}
	type kase struct {
		name  string
		cores int
		f     func(*testing.B)
	}
	cases := []kase{
		{"hmac-sha256 (reference)", 1, benchHMAC},
		{"encrypt, 1 worker", 1, benchEncrypt(1)},
		{"decrypt, 1 worker", 1, withProcs(1, benchDecrypt)},
		{"encrypt, 2 workers", 2, benchEncrypt(2)},
		{"decrypt, 2 workers", 2, withProcs(2, benchDecrypt)},
	}
	for b.Loop() {
		mbs := make([][]float64, len(cases))
		for range rounds {
			for i, c := range cases {
				r := testing.Benchmark(c.f)
				if r.N == 0 {
					b.Fatalf("%s: benchmark failed", c.name)
				}
				mbs[i] = append(mbs[i], float64(r.Bytes)*float64(r.N)/r.T.Seconds()/1e6/float64(c.cores))
			}
		}
		ref := median(mbs[0])
		var out strings.Builder
		fmt.Fprintf(&out, "\n| case | cores | MB/s per core (median of %d) | ratio to HMAC-SHA256 |\n|---|---|---|---|\n", rounds)
		for i, c := range cases {
			m := median(mbs[i])
			fmt.Fprintf(&out, "| %s | %d | %.0f | %.2f |\n", c.name, c.cores, m, m/ref)
			if i > 0 {
				b.ReportMetric(m/ref, strings.NewReplacer(" ", "", ",", "-").Replace(c.name)+"/hmac")
			}
		}
		fmt.Fprint(os.Stdout, out.String())
	}
}

func withProcs(n int, f func(*testing.B)) func(*testing.B) {
	return func(b *testing.B) {
		prev := runtimeGOMAXPROCS(n)
		defer runtimeGOMAXPROCS(prev)
		f(b)
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
