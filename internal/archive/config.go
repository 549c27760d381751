package archive

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/backup"
	"github.com/moatdb/moat/internal/objstore"
)

// ConfigVersion is the version of the configuration file this package
// reads.
const ConfigVersion = 1

// Config is a node's archive configuration, read from a JSON file by
// [LoadConfig]. Unknown fields are rejected.
type Config struct {
	// Version must be [ConfigVersion].
	Version int `json:"version"`
	// Store is where the files go.
	Store StoreConfig `json:"store"`
	// Region and Service are the service's region and ID, the first two
	// elements of every object key.
	Region  string `json:"region"`
	Service string `json:"service"`
	// Timeline is the node's current timeline, under which base backups
	// are stored (1 for a new service).
	Timeline uint32 `json:"timeline"`
	// PublicKey is the service's RSA public key, PEM. It is not secret.
	PublicKey string `json:"public_key"`
	// PrivateKeyFile is the path of the service's RSA private key, PEM.
	// Only a restore's configuration has it; Fetch needs it.
	PrivateKeyFile string `json:"private_key_file,omitempty"`
	// AuthKeyFile is the path of the service's backup authentication key
	// (backup.AuthKey, hex): what is stored is MACed with it, and what is
	// read must verify under it. The agent sets AuthKey instead; nodes
	// never hold it.
	AuthKeyFile string `json:"auth_key_file,omitempty"`
	// PGBinDir holds pg_basebackup. Default: $MOAT_PG_BINDIR, else
	// `pg_config --bindir`, else PATH.
	PGBinDir string `json:"pg_bin_dir,omitempty"`

	// ObjectStore, when set, is used instead of opening Store (agents
	// and tests that already hold one).
	ObjectStore objstore.Store `json:"-"`
	// AuthKey, when set, is used instead of AuthKeyFile.
	AuthKey []byte `json:"-"`
	// PrivateKey, when set, is used instead of PrivateKeyFile.
	PrivateKey *rsa.PrivateKey `json:"-"`
	// Now is the clock that stamps base backups and that Prune measures
	// ages by; time.Now when nil.
	Now func() time.Time `json:"-"`
}

// now reads c's clock.
func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// StoreConfig selects the object store: exactly one of Dir and S3.
type StoreConfig struct {
	// Dir is a local directory (an objstore.Dir).
	Dir string `json:"dir,omitempty"`
	// S3 is an S3-compatible bucket.
	S3 *S3Config `json:"s3,omitempty"`
}

// S3Config is the file form of objstore.S3Config. The secret is read from
// a file so the configuration itself may be world-readable.
type S3Config struct {
	Endpoint            string `json:"endpoint"`
	Insecure            bool   `json:"insecure,omitempty"`
	Region              string `json:"region,omitempty"`
	Bucket              string `json:"bucket"`
	AccessKeyID         string `json:"access_key_id,omitempty"`
	SecretAccessKeyFile string `json:"secret_access_key_file,omitempty"`
	PathStyle           bool   `json:"path_style,omitempty"`
}

// LoadConfig reads and validates the configuration file at path.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read archive config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("archive config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates a configuration.
func ParseConfig(b []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: trailing data after the object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks c.
func (c *Config) Validate() error {
	if c.Version != ConfigVersion {
		return fmt.Errorf("version %d: this moat reads version %d", c.Version, ConfigVersion)
	}
	if c.ObjectStore == nil {
		switch {
		case c.Store.Dir != "" && c.Store.S3 != nil:
			return errors.New("store: set one of dir and s3, not both")
		case c.Store.Dir == "" && c.Store.S3 == nil:
			return errors.New("store: set dir or s3")
		case c.Store.S3 != nil && (c.Store.S3.Endpoint == "" || c.Store.S3.Bucket == ""):
			return errors.New("store.s3: endpoint and bucket are required")
		}
	}
	if _, err := objstore.ServicePrefix(c.Region, c.Service); err != nil {
		return fmt.Errorf("region and service: %w", err)
	}
	if c.Timeline == 0 {
		return errors.New("timeline: must be at least 1")
	}
	if _, err := backup.ParsePublicKeyPEM([]byte(c.PublicKey)); err != nil {
		return fmt.Errorf("public_key: %w", err)
	}
	return nil
}

func (c *Config) publicKey() (*rsa.PublicKey, error) {
	return backup.ParsePublicKeyPEM([]byte(c.PublicKey))
}

// authKey returns the service's backup authentication key.
func (c *Config) authKey() ([]byte, error) {
	if c.AuthKey != nil {
		if len(c.AuthKey) != backup.AuthKeySize {
			return nil, fmt.Errorf("backup authentication key: %d bytes, want %d", len(c.AuthKey), backup.AuthKeySize)
		}
		return c.AuthKey, nil
	}
	if c.AuthKeyFile == "" {
		return nil, errors.New("no backup authentication key (auth_key_file in the archive config)")
	}
	b, err := os.ReadFile(c.AuthKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read backup authentication key: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != backup.AuthKeySize {
		return nil, fmt.Errorf("backup authentication key %s: want %d bytes in hex", c.AuthKeyFile, backup.AuthKeySize)
	}
	return k, nil
}

func (c *Config) privateKey() (*rsa.PrivateKey, error) {
	k := c.PrivateKey
	if k == nil {
		if c.PrivateKeyFile == "" {
			return nil, errors.New("no private_key_file in the archive config (only a restore has one)")
		}
		b, err := os.ReadFile(c.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read private key: %w", err)
		}
		if k, err = backup.ParsePrivateKeyPEM(b); err != nil {
			return nil, err
		}
	}
	pub, err := c.publicKey()
	if err != nil {
		return nil, err
	}
	if !k.PublicKey.Equal(pub) {
		return nil, fmt.Errorf("the private key does not match public_key: %w", backup.ErrWrongKey)
	}
	return k, nil
}

// store opens the configured object store.
func (c *Config) store() (objstore.Store, error) {
	if c.ObjectStore != nil {
		return c.ObjectStore, nil
	}
	if c.Store.Dir != "" {
		return objstore.NewDir(c.Store.Dir)
	}
	s := c.Store.S3
	if s == nil {
		return nil, errors.New("no object store configured")
	}
	var secret string
	if s.SecretAccessKeyFile != "" {
		b, err := os.ReadFile(s.SecretAccessKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read s3 secret: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	return objstore.NewS3(objstore.S3Config{
		Endpoint: s.Endpoint, Insecure: s.Insecure, Region: s.Region, Bucket: s.Bucket,
		AccessKeyID: s.AccessKeyID, SecretAccessKey: secret, PathStyle: s.PathStyle,
	})
}
