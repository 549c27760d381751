package ops

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/domain"
)

// Key is an Ed25519 SSH key held in memory: a CA's, a node's host key or
// an operator's session key. Marshal returns it for the caller to seal or
// store; this package never writes it anywhere but OpenSSH's session files.
type Key struct {
	ssh.Signer
	priv ed25519.PrivateKey
}

// NewKey generates a key.
func NewKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ssh key: %w", err)
	}
	return newKey(priv)
}

func newKey(priv ed25519.PrivateKey) (*Key, error) {
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("ssh signer: %w", err)
	}
	return &Key{Signer: s, priv: priv}, nil
}

// ParseKey reads a key written by Marshal.
func ParseKey(b []byte) (*Key, error) {
	k, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse ssh key: %w", err)
	}
	priv, ok := k.(*ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse ssh key: %T is not an Ed25519 key", k)
	}
	return newKey(*priv)
}

// Marshal returns the private key in the OpenSSH format (PEM).
func (k *Key) Marshal() ([]byte, error) {
	blk, err := ssh.MarshalPrivateKey(k.priv, "")
	if err != nil {
		return nil, fmt.Errorf("marshal ssh key: %w", err)
	}
	return pem.EncodeToMemory(blk), nil
}

// AuthorizedKey is the public key in authorized_keys form, without the
// trailing newline ("ssh-ed25519 AAAA…").
func (k *Key) AuthorizedKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey())))
}

// CA is an SSH certificate authority. The control plane keeps two: the
// operators' CA, which signs user certificates for grants, and the host CA,
// which signs the nodes' host certificates that the CLI pins. Its key
// (Key.Marshal) is sealed by the caller like the other CAs' keys.
type CA struct {
	*Key
}

// NewCA generates a CA.
func NewCA() (*CA, error) {
	k, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	return &CA{k}, nil
}

// ParseCA reads a CA key written by Marshal.
func ParseCA(b []byte) (*CA, error) {
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("ssh ca: %w", err)
	}
	return &CA{k}, nil
}

// OpsExtensions are the only extensions of an operator certificate: a
// terminal, and no port, agent or X11 forwarding, no user rc.
var OpsExtensions = map[string]string{"permit-pty": ""}

// IssueUser signs the certificate for grant g's session key at now:
// principal domain.OpsPrincipal, KeyId the grant's ID, the grant's serial,
// valid from now less domain.OpsClockSkew until the grant expires (at most
// domain.MaxOpsTTL from now), source-address the grant's source CIDRs, and
// only permit-pty.
func (ca *CA) IssueUser(g *domain.OpsGrant, key ssh.PublicKey, now time.Time) (*ssh.Certificate, error) {
	if !domain.ValidID(domain.PrefixOpsGrant, g.ID) {
		return nil, fmt.Errorf("issue operator certificate: %q is not a grant ID", g.ID)
	}
	if g.Serial == 0 {
		return nil, fmt.Errorf("issue operator certificate for %s: no serial", g.ID)
	}
	after, before, err := g.CertValidity(now)
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate: %w", err)
	}
	if before.Sub(now) > domain.MaxOpsTTL {
		return nil, fmt.Errorf("issue operator certificate for %s: expires %s after issue, more than %s", g.ID, before.Sub(now), domain.MaxOpsTTL)
	}
	src, err := sourceAddress(g.SourceCIDRs)
	if err != nil {
		return nil, fmt.Errorf("issue operator certificate for %s: %w", g.ID, err)
	}
	exts := make(map[string]string, len(OpsExtensions))
	for k, v := range OpsExtensions {
		exts[k] = v
	}
	c := &ssh.Certificate{
		Key:             key,
		Serial:          g.Serial,
		CertType:        ssh.UserCert,
		KeyId:           g.ID,
		ValidPrincipals: []string{domain.OpsPrincipal},
		ValidAfter:      uint64(after.Unix()),
		ValidBefore:     uint64(before.Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: map[string]string{sourceAddressOption: src},
			Extensions:      exts,
		},
	}
	if err := c.SignCert(rand.Reader, ca.Signer); err != nil {
		return nil, fmt.Errorf("sign operator certificate for %s: %w", g.ID, err)
	}
	return c, nil
}

// HostCertTTL is the lifetime of a node's host certificate; the agent asks
// for a new one well before it ends.
const HostCertTTL = 30 * 24 * time.Hour

// IssueHost signs a host certificate for a node's host key at now, valid
// for ttl (0 means HostCertTTL): KeyId and first principal the node's ID
// (the CLI connects with HostKeyAlias set to it), then its other names and
// addresses.
func (ca *CA) IssueHost(key ssh.PublicKey, nodeID string, names []string, now time.Time, ttl time.Duration) (*ssh.Certificate, error) {
	if !domain.ValidID(domain.PrefixNode, nodeID) {
		return nil, fmt.Errorf("issue host certificate: %q is not a node ID", nodeID)
	}
	if ttl <= 0 {
		ttl = HostCertTTL
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	c := &ssh.Certificate{
		Key:             key,
		Serial:          serial,
		CertType:        ssh.HostCert,
		KeyId:           nodeID,
		ValidPrincipals: append([]string{nodeID}, names...),
		ValidAfter:      uint64(now.Add(-domain.OpsClockSkew).Unix()),
		ValidBefore:     uint64(now.Add(ttl).Unix()),
	}
	if err := c.SignCert(rand.Reader, ca.Signer); err != nil {
		return nil, fmt.Errorf("sign host certificate for %s: %w", nodeID, err)
	}
	return c, nil
}

// NewSerial returns a random non-zero 63-bit certificate serial, for
// callers that do not number certificates themselves.
func NewSerial() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("certificate serial: %w", err)
		}
		if s := binary.BigEndian.Uint64(b[:]) >> 1; s != 0 {
			return s, nil
		}
	}
}

const sourceAddressOption = "source-address"

// sourceAddress renders CIDRs as a source-address option value; it refuses
// an empty list (a certificate usable from anywhere).
func sourceAddress(cidrs []string) (string, error) {
	if len(cidrs) == 0 {
		return "", errors.New("no source address")
	}
	for _, c := range cidrs {
		if _, err := netip.ParsePrefix(c); err != nil {
			return "", fmt.Errorf("source address %q: %w", c, err)
		}
	}
	return strings.Join(cidrs, ","), nil
}

// parseSourceAddress parses a source-address option value.
func parseSourceAddress(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("source address %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("source address %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
