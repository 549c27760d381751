package password

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestVerifierRoundTrip: a fresh password checks against its verifier and
// another does not.
func TestVerifierRoundTrip(t *testing.T) {
	pw := Generate()
	if len(pw) < 20 {
		t.Fatalf("Generate() = %q: too short", pw)
	}
	v, err := Verifier(pw)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") || strings.Contains(v, pw) {
		t.Fatalf("Verifier = %q", v)
	}
	if !Check(pw, v) || Check(pw+"x", v) {
		t.Errorf("Check does not tell the password from another")
	}
}

// TestKnownVector: the RFC 7677 example (user "user", password "pencil",
// salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations).
func TestKnownVector(t *testing.T) {
	got, err := verifier("pencil", mustB64("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
	if err != nil {
		t.Fatal(err)
	}
	// StoredKey = H(ClientKey), ServerKey from the RFC's example exchange.
	want := "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
	if got != want {
		t.Errorf("verifier(pencil) = %s, want %s", got, want)
	}
}

func mustB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
