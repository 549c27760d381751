package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/secret"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)

func testKeyring(t *testing.T) *secret.Keyring {
	t.Helper()
	k, err := secret.NewKeyring(bytes.Repeat([]byte{42}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func entry(i int) domain.AuditEntry {
	return domain.AuditEntry{
		Time:      t0.Add(time.Duration(i) * time.Second),
		Actor:     "user:alice",
		ProjectID: fmt.Sprintf("prj_%d", i%3),
		Action:    "service.create",
		Target:    fmt.Sprintf("svc_%d", i),
		RequestID: fmt.Sprintf("req_%d", i),
		Source:    "192.0.2.1",
		Outcome:   domain.OutcomeSuccess,
		Detail:    `{"plan":"small"}`,
	}
}

// buildLog appends n entries and a checkpoint after each seq in cps.
func buildLog(t *testing.T, n int, cps ...int64) (*fakeTx, *Signer) {
	t.Helper()
	ctx := context.Background()
	tx := newFakeTx()
	sg, err := LoadOrCreateSigner(ctx, tx, testKeyring(t))
	if err != nil {
		t.Fatalf("LoadOrCreateSigner: %v", err)
	}
	for i := 1; i <= n; i++ {
		if _, err := Append(ctx, tx, entry(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		for _, c := range cps {
			if c == int64(i) {
				if _, err := sg.Checkpoint(ctx, tx, t0.Add(time.Duration(i)*time.Second)); err != nil {
					t.Fatalf("Checkpoint at %d: %v", i, err)
				}
			}
		}
	}
	return tx, sg
}

func TestHashGolden(t *testing.T) {
	t.Parallel()
	e := entry(1)
	e.Seq, e.PrevHash = 1, GenesisHash
	e.Time = e.Time.Truncate(TimePrecision)
	// Pins the encoding: changing it breaks every stored chain.
	const want = "5229dd74bd01b7ce45763de6cb96ea42c47c101e510c7e060ab36c9927c04775" // also computed independently in Python
	if got := Hash(e); got != want {
		t.Errorf("Hash(entry(1)) = %s, want %s", got, want)
	}
	inParis := e
	inParis.Time = e.Time.In(time.FixedZone("CET", 3600))
	if Hash(inParis) != Hash(e) {
		t.Errorf("Hash depends on the time zone of Time")
	}
}

func TestHashUnambiguous(t *testing.T) {
	t.Parallel()
	base := domain.AuditEntry{Seq: 1, Time: t0, Action: "a", Outcome: "success", PrevHash: GenesisHash}
	variants := map[string]func(*domain.AuditEntry){
		"actor ab":       func(e *domain.AuditEntry) { e.Actor = "ab" },
		"actor a proj b": func(e *domain.AuditEntry) { e.Actor, e.ProjectID = "a", "b" },
		"proj ab":        func(e *domain.AuditEntry) { e.ProjectID = "ab" },
		"target a src b": func(e *domain.AuditEntry) { e.Target, e.Source = "a", "b" },
		"target ab":      func(e *domain.AuditEntry) { e.Target = "ab" },
		"seq 2":          func(e *domain.AuditEntry) { e.Seq = 2 },
		"time +1ns":      func(e *domain.AuditEntry) { e.Time = e.Time.Add(1) },
		"detail":         func(e *domain.AuditEntry) { e.Detail = "x" },
		"request":        func(e *domain.AuditEntry) { e.RequestID = "x" },
		"outcome":        func(e *domain.AuditEntry) { e.Outcome = "denied" },
		"prev":           func(e *domain.AuditEntry) { e.PrevHash = strings.Repeat("1", 64) },
		"target a":       func(e *domain.AuditEntry) { e.Action, e.Target = "", "a" },
	}
	seen := map[string]string{Hash(base): "base"}
	for name, mut := range variants {
		e := base
		mut(&e)
		h := Hash(e)
		if other, dup := seen[h]; dup {
			t.Errorf("%s and %s hash alike", name, other)
		}
		seen[h] = name
	}
	withHash := base
	withHash.Hash = "ignored"
	if Hash(withHash) != Hash(base) {
		t.Errorf("Hash depends on the Hash field")
	}
}

func TestAppend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := newFakeTx()
	in := entry(1)
	in.Time = time.Date(2030, 1, 2, 4, 4, 5, 123456789, time.FixedZone("CET", 3600))
	in.Detail = "bad \xff utf8 and \x00 nul"
	in.Seq, in.PrevHash, in.Hash = 99, "x", "y" // ignored
	e1, err := Append(ctx, tx, in)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	want := entry(1)
	want.Time = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	want.Detail = "bad \uFFFD utf8 and \uFFFD nul"
	want.Seq, want.PrevHash = 1, GenesisHash
	want.Hash = Hash(want)
	if diff := cmp.Diff(want, e1); diff != "" {
		t.Errorf("Append first entry (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]domain.AuditEntry{e1}, tx.entries); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	e2, err := Append(ctx, tx, entry(2))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if e2.Seq != 2 || e2.PrevHash != e1.Hash || e2.Hash != Hash(e2) {
		t.Errorf("second entry = seq %d prev %s hash %s; want seq 2 prev %s hash %s", e2.Seq, e2.PrevHash, e2.Hash, e1.Hash, Hash(e2))
	}
	if e1.Time.Location() != time.UTC {
		t.Errorf("time location = %v, want UTC", e1.Time.Location())
	}

	for name, mut := range map[string]func(*domain.AuditEntry){
		"no time":     func(e *domain.AuditEntry) { e.Time = time.Time{} },
		"no action":   func(e *domain.AuditEntry) { e.Action = "" },
		"bad outcome": func(e *domain.AuditEntry) { e.Outcome = "ok" },
	} {
		e := entry(3)
		mut(&e)
		if _, err := Append(ctx, tx, e); err == nil {
			t.Errorf("%s: Append succeeded", name)
		}
	}
	if len(tx.entries) != 2 {
		t.Errorf("invalid entries were stored: %d entries", len(tx.entries))
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	rehash := func(tx *fakeTx, seq int64) {
		i := tx.index(seq)
		tx.entries[i].Hash = Hash(tx.entries[i])
	}
	tests := []struct {
		name    string
		n       int
		cps     []int64
		tamper  func(tx *fakeTx, sg *Signer)
		wantBad int64 // 0: OK
		want    string
	}{
		{name: "intact", n: 20, cps: []int64{10, 20}},
		{name: "empty", n: 0},
		{name: "intact, no checkpoints", n: 5},
		{
			name: "edited field", n: 20, cps: []int64{10, 20},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.entries[tx.index(7)].Actor = "user:mallory" },
			wantBad: 7, want: "entry 7: hash mismatch (row edited)",
		},
		{
			name: "edited time", n: 20, cps: []int64{10, 20},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.entries[tx.index(3)].Time = t0 },
			wantBad: 3, want: "entry 3: hash mismatch (row edited)",
		},
		{
			name: "edited with its hash recomputed", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				tx.entries[tx.index(7)].Outcome = domain.OutcomeDenied
				rehash(tx, 7)
			},
			wantBad: 8, want: "entry 8: prev_hash does not match entry 7",
		},
		{
			name: "deleted middle row", n: 20, cps: []int64{10, 20},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.deleteSeqs(7, 7) },
			wantBad: 7, want: "entry 7: missing (row deleted)",
		},
		{
			name: "deleted rows", n: 20, cps: []int64{10, 20},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.deleteSeqs(7, 9) },
			wantBad: 7, want: "entry 7: missing, and 2 more up to 9 (rows deleted)",
		},
		{
			name: "deleted first row", n: 5,
			tamper:  func(tx *fakeTx, _ *Signer) { tx.deleteSeqs(1, 1) },
			wantBad: 1, want: "entry 1: missing",
		},
		{
			name: "deleted row, later rows renumbered", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				tx.deleteSeqs(7, 7)
				for i := range tx.entries {
					if tx.entries[i].Seq > 7 {
						tx.entries[i].Seq--
					}
				}
			},
			wantBad: 7, want: "entry 7: hash mismatch",
		},
		{
			name: "deleted row, later rows renumbered and rechained", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				tx.deleteSeqs(7, 7)
				prev := tx.entries[tx.index(6)].Hash
				for s := int64(8); s <= 20; s++ {
					i := tx.index(s)
					tx.entries[i].Seq = s - 1
					tx.entries[i].PrevHash = prev
					tx.entries[i].Hash = Hash(tx.entries[i])
					prev = tx.entries[i].Hash
				}
			},
			wantBad: 10, want: "entry 10: hash differs from the checkpoint signed at 2030-01-02T03:04:15Z (chain rewritten)",
		},
		{
			name: "swapped rows", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				i, j := tx.index(5), tx.index(6)
				tx.entries[i], tx.entries[j] = tx.entries[j], tx.entries[i]
				tx.entries[i].Seq, tx.entries[j].Seq = 5, 6
			},
			wantBad: 5, want: "entry 5: hash mismatch (row edited)",
		},
		{
			name: "swapped rows with hashes recomputed", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				i, j := tx.index(5), tx.index(6)
				tx.entries[i], tx.entries[j] = tx.entries[j], tx.entries[i]
				tx.entries[i].Seq, tx.entries[j].Seq = 5, 6
				rehash(tx, 5)
				rehash(tx, 6)
			},
			wantBad: 5, want: "entry 5: prev_hash does not match entry 4",
		},
		{
			name: "deleted tail after a checkpoint", n: 20, cps: []int64{10, 15},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.deleteSeqs(13, 20) },
			wantBad: 13, want: "entry 13: missing (log ends at seq 12, but a checkpoint signed at 2030-01-02T03:04:20Z covers seq 15: tail deleted)",
		},
		{
			name: "deleted everything", n: 20, cps: []int64{10},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.deleteSeqs(1, 20) },
			wantBad: 1, want: "entry 1: missing (log ends at seq 0",
		},
		{
			name: "chain rewritten from a seq", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				prev := tx.entries[tx.index(11)].Hash
				for s := int64(12); s <= 20; s++ {
					i := tx.index(s)
					tx.entries[i].Actor = "user:mallory"
					tx.entries[i].PrevHash = prev
					tx.entries[i].Hash = Hash(tx.entries[i])
					prev = tx.entries[i].Hash
				}
			},
			wantBad: 20, want: "entry 20: hash differs from the checkpoint",
		},
		{
			name: "forged signature", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				sig, _ := base64.StdEncoding.DecodeString(tx.checkpoints[0].Signature)
				sig[0] ^= 1
				tx.checkpoints[0].Signature = base64.StdEncoding.EncodeToString(sig)
			},
			wantBad: 10, want: "checkpoint at seq 10: bad signature (forged or altered)",
		},
		{
			name: "garbage signature", n: 20, cps: []int64{10, 20},
			tamper:  func(tx *fakeTx, _ *Signer) { tx.checkpoints[1].Signature = "!!" },
			wantBad: 20, want: "checkpoint at seq 20: bad signature",
		},
		{
			name: "checkpoint moved to another seq", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				tx.checkpoints[1].Seq = 18
				tx.checkpoints[1].Hash = tx.entries[tx.index(18)].Hash
			},
			wantBad: 18, want: "checkpoint at seq 18: bad signature",
		},
		{
			name: "checkpoint signed by another key", n: 20, cps: []int64{10},
			tamper: func(tx *fakeTx, _ *Signer) {
				forger := newSigner(otherPriv)
				if _, err := forger.Checkpoint(context.Background(), tx, t0); err != nil {
					panic(err)
				}
			},
			wantBad: 20, want: "checkpoint at seq 20: signed by key",
		},
		{
			name: "checkpoint signed by another key claiming ours", n: 20, cps: []int64{10},
			tamper: func(tx *fakeTx, sg *Signer) {
				forger := newSigner(otherPriv)
				forger.keyID = sg.keyID
				if _, err := forger.Checkpoint(context.Background(), tx, t0); err != nil {
					panic(err)
				}
			},
			wantBad: 20, want: "checkpoint at seq 20: bad signature",
		},
		{
			name: "edit before a forged checkpoint wins", n: 20, cps: []int64{10, 20},
			tamper: func(tx *fakeTx, _ *Signer) {
				tx.checkpoints[1].Signature = "AAAA"
				tx.entries[tx.index(4)].Detail = "x"
			},
			wantBad: 4, want: "entry 4: hash mismatch",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tx, sg := buildLog(t, tt.n, tt.cps...)
			if tt.tamper != nil {
				tt.tamper(tx, sg)
			}
			r, err := Verify(context.Background(), tx, sg.PublicKey())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.wantBad == 0 {
				want := Report{OK: true, Entries: int64(tt.n), Checkpoints: int64(len(tt.cps)), LastSeq: int64(tt.n)}
				if len(tt.cps) > 0 {
					want.CheckedSeq = tt.cps[len(tt.cps)-1]
				}
				if diff := cmp.Diff(want, r); diff != "" {
					t.Errorf("Verify (-want +got):\n%s", diff)
				}
				return
			}
			if r.OK || r.FirstBad != tt.wantBad || !strings.HasPrefix(r.Problem, tt.want) {
				t.Errorf("Verify = %+v\nwant FirstBad %d, Problem starting %q", r, tt.wantBad, tt.want)
			}
		})
	}
}

func TestVerifyUndetectableTail(t *testing.T) {
	t.Parallel()
	// Entries after the newest checkpoint are protected by the chain alone;
	// the report says how far the signatures reach.
	tx, sg := buildLog(t, 20, 15)
	tx.deleteSeqs(17, 20)
	r, err := Verify(context.Background(), tx, sg.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	want := Report{OK: true, Entries: 16, Checkpoints: 1, LastSeq: 16, CheckedSeq: 15}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("Verify (-want +got):\n%s", diff)
	}
}

func TestVerifyWrongPinnedKey(t *testing.T) {
	t.Parallel()
	tx, _ := buildLog(t, 5, 3, 5)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	r, err := Verify(context.Background(), tx, other)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || r.FirstBad != 3 || !strings.Contains(r.Problem, "signed by key") {
		t.Errorf("Verify with the wrong key = %+v, want checkpoint 3 signed by another key", r)
	}
}

func TestVerifyPaged(t *testing.T) {
	t.Parallel()
	n := 2*pageSize + 17
	tx, sg := buildLog(t, n, int64(pageSize), int64(n))
	r, err := Verify(context.Background(), tx, sg.PublicKey())
	if err != nil || !r.OK || r.Entries != int64(n) || r.CheckedSeq != int64(n) {
		t.Fatalf("Verify intact = %+v, %v", r, err)
	}
	tx.entries[tx.index(int64(pageSize+1))].Target = "x"
	r, err = Verify(context.Background(), tx, sg.PublicKey())
	if err != nil || r.OK || r.FirstBad != int64(pageSize+1) || r.Entries != int64(n) {
		t.Errorf("Verify edited = %+v, %v; want FirstBad %d", r, err, pageSize+1)
	}
}

func TestSigner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kr := testKeyring(t)
	tx := newFakeTx()
	if _, err := LoadOrCreateSigner(ctx, tx, kr); err != nil {
		t.Fatal(err)
	}
	sg, err := LoadOrCreateSigner(ctx, tx, kr)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := LoadOrCreateSigner(ctx, tx, kr)
	if !first.PublicKey().Equal(sg.PublicKey()) {
		t.Errorf("reloaded signer has another key")
	}
	if bytes.Contains(tx.meta[MetaSigningKey], sg.priv.Seed()) {
		t.Errorf("signing key stored in plaintext")
	}
	stored, err := StoredPublicKey(ctx, tx)
	if err != nil || !stored.Equal(sg.PublicKey()) {
		t.Errorf("StoredPublicKey = %x, %v; want %x", stored, err, sg.PublicKey())
	}
	parsed, err := ParsePublicKey(MarshalPublicKey(sg.PublicKey()))
	if err != nil || !parsed.Equal(sg.PublicKey()) {
		t.Errorf("ParsePublicKey(MarshalPublicKey(k)) = %x, %v", parsed, err)
	}
	if _, err := sg.Checkpoint(ctx, tx, t0); !errors.Is(err, ErrEmpty) {
		t.Errorf("Checkpoint on an empty log = %v, want ErrEmpty", err)
	}

	var out strings.Builder
	slog.New(slog.NewJSONHandler(&out, nil)).Info("signer", "signer", sg)
	out.WriteString(fmt.Sprintf("%+v %#v %v", sg, sg, *sg))
	for _, leak := range []string{fmt.Sprintf("%v", []byte(sg.priv.Seed())), fmt.Sprintf("%x", sg.priv.Seed()), base64.StdEncoding.EncodeToString(sg.priv.Seed())} {
		if strings.Contains(out.String(), leak) {
			t.Errorf("output reveals the signing key: %s", out.String())
		}
	}
}

func TestSignerRefusesTamperedKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kr := testKeyring(t)
	otherKR, _ := secret.NewKeyring(bytes.Repeat([]byte{1}, secret.KeySize))
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name   string
		tamper func(tx *fakeTx)
		kr     Sealer
	}{
		{"public key replaced", func(tx *fakeTx) { tx.meta[MetaPublicKey] = MarshalPublicKey(otherPub) }, kr},
		{"signing key deleted", func(tx *fakeTx) { delete(tx.meta, MetaSigningKey) }, kr},
		{"signing key corrupted", func(tx *fakeTx) { tx.meta[MetaSigningKey][10] ^= 1 }, kr},
		{"public key garbage", func(tx *fakeTx) { tx.meta[MetaPublicKey] = []byte("x") }, kr},
		{"other master key", func(*fakeTx) {}, otherKR},
	}
	for _, tt := range tests {
		tx := newFakeTx()
		if _, err := LoadOrCreateSigner(ctx, tx, kr); err != nil {
			t.Fatal(err)
		}
		tt.tamper(tx)
		if _, err := LoadOrCreateSigner(ctx, tx, tt.kr); err == nil {
			t.Errorf("%s: LoadOrCreateSigner succeeded", tt.name)
		}
	}
	// A lost public key is restored from the signing key.
	tx := newFakeTx()
	sg, _ := LoadOrCreateSigner(ctx, tx, kr)
	delete(tx.meta, MetaPublicKey)
	if _, err := LoadOrCreateSigner(ctx, tx, kr); err != nil {
		t.Fatalf("reload without public key: %v", err)
	}
	if got, _ := StoredPublicKey(ctx, tx); !got.Equal(sg.PublicKey()) {
		t.Errorf("public key not restored")
	}
}

// TestAppendBoundsFields: a caller cannot make one entry arbitrarily large.
func TestAppendBoundsFields(t *testing.T) {
	t.Parallel()
	tx := newFakeTx()
	in := entry(1)
	in.Target = strings.Repeat("t", 10_000)
	in.Detail = strings.Repeat("é", 10_000)
	e, err := Append(context.Background(), tx, in)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(e.Target) > MaxField || !strings.HasSuffix(e.Target, "…") {
		t.Errorf("Target is %d bytes (suffix %q), want at most %d ending in …", len(e.Target), e.Target[len(e.Target)-4:], MaxField)
	}
	if len(e.Detail) > MaxDetail || !utf8.ValidString(e.Detail) {
		t.Errorf("Detail is %d bytes, valid UTF-8 %v; want at most %d and valid", len(e.Detail), utf8.ValidString(e.Detail), MaxDetail)
	}
	if e.Hash != Hash(e) {
		t.Errorf("the stored entry's hash is not over the bounded fields")
	}
}
