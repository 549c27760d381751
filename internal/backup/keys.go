package backup

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// KeyBits is the size of the RSA keys [GenerateKey] makes.
const KeyBits = 3072

// minKeyBits is the smallest RSA key the writers accept.
const minKeyBits = 2048

// GenerateKey returns a new RSA-3072 key pair for a service.
func GenerateKey() (*rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, KeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate rsa key: %w", err)
	}
	return k, nil
}

// Fingerprint is the SHA-256 of a public key's PKIX (SubjectPublicKeyInfo)
// DER encoding, as stored in moat1 headers. It is the same value as
//
//	openssl pkey -pubin -in pub.pem -outform DER | openssl dgst -sha256
type Fingerprint [32]byte

// String returns the fingerprint as "SHA256:" followed by lowercase hex.
func (f Fingerprint) String() string { return fmt.Sprintf("SHA256:%x", f[:]) }

// KeyFingerprint returns pub's fingerprint.
func KeyFingerprint(pub *rsa.PublicKey) (Fingerprint, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("marshal public key: %w", err)
	}
	return sha256.Sum256(der), nil
}

// MarshalPrivateKeyPEM encodes k as a PKCS #8 "PRIVATE KEY" PEM block.
// The result is a secret.
func MarshalPrivateKeyPEM(k *rsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKeyPEM decodes an RSA private key from a PKCS #8 "PRIVATE KEY"
// or PKCS #1 "RSA PRIVATE KEY" PEM block (what pghoard configurations hold).
func ParsePrivateKeyPEM(b []byte) (*rsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	switch blk.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("parse private key: %T is not an RSA key", k)
		}
		return rk, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("parse private key: unexpected PEM block %q", blk.Type)
	}
}

// MarshalPublicKeyPEM encodes k as a PKIX "PUBLIC KEY" PEM block.
func MarshalPublicKeyPEM(k *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKeyPEM decodes an RSA public key from a PKIX "PUBLIC KEY" or
// PKCS #1 "RSA PUBLIC KEY" PEM block.
func ParsePublicKeyPEM(b []byte) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("parse public key: no PEM block")
	}
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("parse public key: %T is not an RSA key", k)
		}
		return rk, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("parse public key: unexpected PEM block %q", blk.Type)
	}
}

func checkPublicKey(pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return errors.New("no public key")
	}
	if pub.N.BitLen() < minKeyBits {
		return fmt.Errorf("rsa key has %d bits, want at least %d", pub.N.BitLen(), minKeyBits)
	}
	return nil
}

// AuthKeySize is the size of the key [AuthKey] derives.
const AuthKeySize = 32

// AuthKey derives a service's backup authentication key from its private
// key (PEM, as the control plane stores it sealed): HKDF-SHA256 of the
// key's DER with the label "moat backup auth v1". The key MACs what the
// agent stores for the service (package archive), so that a file written
// with the public key alone, which anyone may hold, is refused. Whoever
// holds the private key can derive it; the control plane gives it to the
// agents of the service's nodes, never to the nodes themselves.
func AuthKey(privPEM []byte) ([]byte, error) {
	blk, _ := pem.Decode(privPEM)
	if blk == nil || (blk.Type != "PRIVATE KEY" && blk.Type != "RSA PRIVATE KEY") {
		return nil, errors.New("backup auth key: the private key is not a PEM private key")
	}
	k, err := hkdf.Key(sha256.New, blk.Bytes, nil, "moat backup auth v1", AuthKeySize)
	if err != nil {
		return nil, fmt.Errorf("backup auth key: %w", err)
	}
	return k, nil
}
