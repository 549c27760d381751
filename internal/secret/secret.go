// Package secret keeps Moat's secrets at rest and out of logs: the server's
// master key file (LoadOrCreateKey), authenticated encryption of stored
// secrets under that key (Keyring.Seal and Keyring.Open, AES-256-GCM in a
// versioned format so keys can rotate), and Value, a string that prints as
// REDACTED everywhere except through Reveal.
//
// Imported by the control plane (server wiring, PKI and audit key storage,
// any store of passwords or tokens) and by the agent. It imports only the
// standard library.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// KeySize is the size in bytes of a master key.
const KeySize = 32

// Sealed format, version 1:
//
//	version (1 byte, 0x01) | key ID (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag
//
// The GCM additional data is the 5-byte header followed by the caller's
// associated data, so neither the header nor the context can be swapped.
const (
	version1   = 0x01
	keyIDSize  = 4
	headerSize = 1 + keyIDSize
	nonceSize  = 12
	tagSize    = 16
)

// ErrOpen is returned (wrapped) by Open for anything that is not a value
// sealed by this keyring with the same associated data: a truncated or
// tampered value, an unknown format version, a key the keyring does not hold,
// or the wrong associated data.
var ErrOpen = errors.New("secret: cannot open sealed value")

// Keyring seals and opens secrets. It holds one primary key, used to seal,
// and optionally older keys still accepted by Open, so a master key can be
// rotated by re-sealing. A Keyring is safe for concurrent use. It formats
// and logs as its key IDs only.
type Keyring struct {
	primary keyEntry
	byID    map[[keyIDSize]byte]cipher.AEAD
}

type keyEntry struct {
	id   [keyIDSize]byte
	aead cipher.AEAD
}

// NewKeyring returns a keyring that seals with primary and opens values
// sealed with primary or any of older. Each key must be KeySize bytes.
func NewKeyring(primary []byte, older ...[]byte) (*Keyring, error) {
	p, err := newKeyEntry(primary)
	if err != nil {
		return nil, fmt.Errorf("primary key: %w", err)
	}
	k := &Keyring{primary: p, byID: map[[keyIDSize]byte]cipher.AEAD{p.id: p.aead}}
	for i, o := range older {
		e, err := newKeyEntry(o)
		if err != nil {
			return nil, fmt.Errorf("older key %d: %w", i, err)
		}
		if _, dup := k.byID[e.id]; !dup {
			k.byID[e.id] = e.aead
		}
	}
	return k, nil
}

// newKeyEntry derives the sealing key and the key ID from a master key with
// HKDF-SHA256, so the master key itself is never used directly and can later
// derive keys for other purposes.
func newKeyEntry(master []byte) (keyEntry, error) {
	if len(master) != KeySize {
		return keyEntry{}, fmt.Errorf("key is %d bytes, want %d", len(master), KeySize)
	}
	encKey, err := hkdf.Key(sha256.New, master, nil, "moat secret seal v1", 32)
	if err != nil {
		return keyEntry{}, fmt.Errorf("derive sealing key: %w", err)
	}
	idBytes, err := hkdf.Key(sha256.New, master, nil, "moat secret key id v1", keyIDSize)
	if err != nil {
		return keyEntry{}, fmt.Errorf("derive key id: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return keyEntry{}, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return keyEntry{}, fmt.Errorf("gcm: %w", err)
	}
	var e keyEntry
	copy(e.id[:], idBytes)
	e.aead = aead
	return e, nil
}

// KeyID returns the primary key's ID in hex. It identifies, and reveals
// nothing about, the key.
func (k *Keyring) KeyID() string { return hex.EncodeToString(k.primary.id[:]) }

// Seal encrypts and authenticates plaintext under the primary key, bound to
// associatedData (for example the name of the record that holds it): Open
// must be given the same associated data. Each call uses a fresh random
// nonce.
func (k *Keyring) Seal(plaintext, associatedData []byte) []byte {
	out := make([]byte, headerSize+nonceSize, headerSize+nonceSize+len(plaintext)+tagSize)
	out[0] = version1
	copy(out[1:headerSize], k.primary.id[:])
	nonce := out[headerSize : headerSize+nonceSize]
	rand.Read(nonce) // never returns an error; crashes the program if randomness is unavailable
	return k.primary.aead.Seal(out, nonce, plaintext, additionalData(out[:headerSize], associatedData))
}

// Open authenticates and decrypts a value returned by Seal with the same
// associated data. Every failure wraps ErrOpen.
func (k *Keyring) Open(sealed, associatedData []byte) ([]byte, error) {
	if len(sealed) < headerSize+nonceSize+tagSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrOpen, len(sealed))
	}
	if sealed[0] != version1 {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrOpen, sealed[0])
	}
	var id [keyIDSize]byte
	copy(id[:], sealed[1:headerSize])
	aead, ok := k.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: sealed with key %x, which this keyring does not hold", ErrOpen, id)
	}
	nonce := sealed[headerSize : headerSize+nonceSize]
	pt, err := aead.Open(nil, nonce, sealed[headerSize+nonceSize:], additionalData(sealed[:headerSize], associatedData))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (tampered, or wrong associated data)", ErrOpen)
	}
	return pt, nil
}

func additionalData(header, ad []byte) []byte {
	out := make([]byte, 0, len(header)+len(ad))
	return append(append(out, header...), ad...)
}

// String describes the keyring by its primary key ID.
func (k *Keyring) String() string { return "secret.Keyring(" + k.KeyID() + ")" }

// Format prints the keyring as String does, for every verb, so that
// formatting it never dumps key material.
func (k *Keyring) Format(f fmt.State, verb rune) { fmt.Fprint(f, k.String()) }

// LogValue logs the primary key ID only.
func (k *Keyring) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", k.KeyID()))
}
