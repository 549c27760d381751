package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/moatdb/moat/internal/domain"
)

// Client is the CLI's side of an operator session: a session key generated
// in memory (its private half never leaves the machine), the certificate the
// control plane issued for it, and the host CA that the node's host
// certificate must chain to (pinned: no trust on first use).
type Client struct {
	key    *Key
	cert   *ssh.Certificate
	hostCA ssh.PublicKey
	nodeID string
}

// NewClient pairs the session key (NewKey; its public key went to the
// control plane with the grant request) with its certificate for node nodeID,
// whose host certificate must be signed by hostCA.
func NewClient(key *Key, cert *ssh.Certificate, hostCA ssh.PublicKey, nodeID string) (*Client, error) {
	if !bytes.Equal(cert.Key.Marshal(), key.PublicKey().Marshal()) {
		return nil, errors.New("ops client: the certificate is for another key")
	}
	if !domain.ValidID(domain.PrefixNode, nodeID) {
		return nil, fmt.Errorf("ops client: %q is not a node ID", nodeID)
	}
	return &Client{key: key, cert: cert, hostCA: hostCA, nodeID: nodeID}, nil
}

// Dial connects to the node's endpoint at addr (host:port) with Go's SSH
// client: the certificate authenticates, and the node's host certificate
// must be signed by the host CA and name the node.
func (c *Client) Dial(ctx context.Context, addr string) (*ssh.Client, error) {
	signer, err := ssh.NewCertSigner(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("ops client: %w", err)
	}
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			return bytes.Equal(auth.Marshal(), c.hostCA.Marshal())
		},
	}
	conf := &ssh.ClientConfig{
		User: domain.OpsPrincipal,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, remote net.Addr, key ssh.PublicKey) error {
			// The node's ID is the principal to check, whatever address
			// (relay, management network) reaches it.
			return checker.CheckHostKey(net.JoinHostPort(c.nodeID, "22"), remote, key)
		},
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01},
		Timeout:           10 * time.Second,
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops client: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	} else {
		_ = nc.SetDeadline(time.Now().Add(conf.Timeout))
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, conf)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ops client: %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// OpenSSH is a private directory (0700) holding what Debian's ssh needs for
// one session: the session key (0600), its certificate and a known-hosts
// file that trusts only the host CA, for the node's ID. Remove it when the
// session ends.
type OpenSSH struct {
	Dir        string
	KeyFile    string
	CertFile   string
	KnownHosts string
	nodeID     string
}

// WriteOpenSSH writes the session's files into a new directory under
// parent ("" means the system's temporary directory).
func (c *Client) WriteOpenSSH(parent string) (*OpenSSH, error) {
	dir, err := os.MkdirTemp(parent, "moat-ops-")
	if err != nil {
		return nil, fmt.Errorf("ops session files: %w", err)
	}
	o := &OpenSSH{
		Dir:        dir,
		KeyFile:    filepath.Join(dir, "id_ed25519"),
		CertFile:   filepath.Join(dir, "id_ed25519-cert.pub"),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		nodeID:     c.nodeID,
	}
	pem, err := c.key.Marshal()
	if err == nil {
		err = os.Chmod(dir, 0o700)
	}
	if err == nil {
		err = os.WriteFile(o.KeyFile, pem, 0o600)
	}
	if err == nil {
		err = os.WriteFile(o.CertFile, ssh.MarshalAuthorizedKey(c.cert), 0o600)
	}
	if err == nil {
		line := "@cert-authority " + c.nodeID + " " + string(ssh.MarshalAuthorizedKey(c.hostCA))
		err = os.WriteFile(o.KnownHosts, []byte(line), 0o600)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("ops session files: %w", err)
	}
	return o, nil
}

// Args are ssh's arguments to reach the node at addr (host:port) and run
// command (none: an interactive shell). They read no configuration file, use
// only this key and certificate (no agent), accept only a host certificate
// of the host CA for the node's ID, and ask for no forwarding.
func (o *OpenSSH) Args(addr string, command ...string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("ops ssh args: %w", err)
	}
	args := []string{
		"-F", "none",
		"-p", port,
		"-l", domain.OpsPrincipal,
		"-i", o.KeyFile,
		"-o", "CertificateFile=" + o.CertFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "PreferredAuthentications=publickey",
		"-o", "UserKnownHostsFile=" + o.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + o.nodeID,
		"-o", "HostKeyAlgorithms=ssh-ed25519-cert-v01@openssh.com",
		"-o", "UpdateHostKeys=no",
		"-o", "ForwardAgent=no",
		"-o", "ForwardX11=no",
		"-o", "ClearAllForwardings=yes",
		"-o", "ConnectTimeout=10",
		host,
	}
	if len(command) > 0 {
		args = append(args, "--", strings.Join(command, " "))
	}
	return args, nil
}

// Remove deletes the session's files.
func (o *OpenSSH) Remove() error { return os.RemoveAll(o.Dir) }
