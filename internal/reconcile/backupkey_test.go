package reconcile_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/secret"
)

// TestServiceBackupKey: a new service gets an RSA-3072 key pair; the public
// half is in the clear, the private half sealed, and a file encrypted with
// the public key opens with the unsealed private key.
func TestServiceBackupKey(t *testing.T) {
	f := newFixture(t, 0)
	svc := f.put(&domain.Service{Meta: domain.Meta{ID: domain.NewID(domain.PrefixService), ProjectID: "proj-test", State: domain.StateRunning},
		Region: "us-east-1", NodeCount: 1}).(*domain.Service)
	f.mustOnce()
	got := get[domain.Service](f, svc.ID)
	if got.BackupPublicKeyPEM == "" || len(got.BackupKeySealed) == 0 {
		t.Fatalf("service backup key not created: public %q, sealed %d bytes", got.BackupPublicKeyPEM, len(got.BackupKeySealed))
	}
	if bytes.Contains(got.BackupKeySealed, []byte("PRIVATE KEY")) {
		t.Fatalf("the private key is stored in the clear")
	}
	pub, err := backup.ParsePublicKeyPEM([]byte(got.BackupPublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	if pub.N.BitLen() != backup.KeyBits {
		t.Errorf("key size %d, want %d", pub.N.BitLen(), backup.KeyBits)
	}
	keys, _ := secret.NewKeyring(make([]byte, secret.KeySize)) // the fixture's keyring
	privPEM, err := keys.Open(got.BackupKeySealed, []byte("service-backup-key:"+svc.ID))
	if err != nil {
		t.Fatalf("unseal: %v", err)
	}
	priv, err := backup.ParsePrivateKeyPEM(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	w, err := backup.NewWriter(&enc, pub, backup.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "rows")
	w.Close()
	r, err := backup.NewReader(&enc, priv)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || string(b) != "rows" {
		t.Errorf("round trip = %q, %v", b, err)
	}
	// A second pass keeps the key.
	f.mustOnce()
	if again := get[domain.Service](f, svc.ID); again.BackupPublicKeyPEM != got.BackupPublicKeyPEM {
		t.Errorf("the backup key changed on a later pass")
	}
}
