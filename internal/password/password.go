// Package password makes database passwords and their PostgreSQL
// SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677), so the control plane stores
// only the verifier and shows the password once. Imported by the API server.
package password

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// Iterations is PostgreSQL's default scram_iterations.
const Iterations = 4096

// Generate returns a fresh random password (26 characters, 130 bits).
func Generate() string { return rand.Text() }

// Verifier returns the SCRAM-SHA-256 verifier PostgreSQL stores for pw, in
// the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>.
func Verifier(pw string) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	return verifier(pw, salt, Iterations)
}

func verifier(pw string, salt []byte, iter int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, pw, salt, iter, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("derive scram key: %w", err)
	}
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(stored[:]), b64(serverKey)), nil
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// Check reports whether pw matches verifier v.
func Check(pw, v string) bool {
	var iter int
	rest, ok := strings.CutPrefix(v, "SCRAM-SHA-256$")
	if !ok {
		return false
	}
	params, _, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	is, s64, ok := strings.Cut(params, ":")
	if !ok {
		return false
	}
	if _, err := fmt.Sscanf(is, "%d", &iter); err != nil || iter < 1 {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(s64)
	if err != nil {
		return false
	}
	got, err := verifier(pw, salt, iter)
	return err == nil && hmac.Equal([]byte(got), []byte(v))
}
