package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/secret"
)

// stateVersion is the version of agent-state.json's format: 2 seals the
// nodes' private keys (1 held them in plain text; it is still read).
const stateVersion = 2

// stateKeyFile, under DataDir, is the host key agent-state.json's node
// keys are sealed with (mode 0600, like the state; never in the state).
const stateKeyFile = "agent-state.key"

// state is agent-state.json: the last desired state received, without
// the nodes' secrets (private keys, backup authentication keys, support
// role passwords), which are in Sealed.
type state struct {
	Version int                 `json:"version"`
	Desired apitype.HostDesired `json:"desired"`
	// Sealed are the nodes' private keys by node ID, sealed (AES-256-GCM)
	// under stateKeyFile and bound to the host, the node and the key.
	Sealed map[string]sealedKeys `json:"sealed,omitempty"`
}

// sealedKeys are one node's secrets, sealed: its private keys, the
// service's backup authentication key and a support grant's role
// password.
type sealedKeys struct {
	Key             []byte `json:"key,omitempty"`
	ReplKey         []byte `json:"repl_key,omitempty"`
	AuthKey         []byte `json:"backup_auth_key,omitempty"`
	SupportPassword []byte `json:"support_password,omitempty"`
}

// secretField is one secret of a node's desired state: the state file
// holds it only sealed, in sealedKeys.
type secretField struct {
	name   string
	plain  []byte  // the secret in nd (nil: none)
	sealed *[]byte // where sealedKeys holds it
	set    func(nd *apitype.NodeDesired, plain []byte)
}

// secretFields returns nd's secrets, and sk's fields that hold them
// sealed.
func secretFields(nd *apitype.NodeDesired, sk *sealedKeys) []secretField {
	str := func(s string) []byte {
		if s == "" {
			return nil
		}
		return []byte(s)
	}
	var support []byte
	if nd.Ops != nil && nd.Ops.Support != nil {
		support = str(nd.Ops.Support.Password)
	}
	return []secretField{
		{"key", str(nd.TLS.KeyPEM), &sk.Key, func(nd *apitype.NodeDesired, p []byte) { nd.TLS.KeyPEM = string(p) }},
		{"repl_key", str(nd.TLS.ReplKeyPEM), &sk.ReplKey, func(nd *apitype.NodeDesired, p []byte) { nd.TLS.ReplKeyPEM = string(p) }},
		{"backup_auth_key", nd.BackupAuthKey, &sk.AuthKey, func(nd *apitype.NodeDesired, p []byte) { nd.BackupAuthKey = p }},
		{"support_password", support, &sk.SupportPassword, func(nd *apitype.NodeDesired, p []byte) {
			if nd.Ops != nil && nd.Ops.Support != nil {
				ops, sup := *nd.Ops, *nd.Ops.Support
				sup.Password = string(p)
				ops.Support = &sup
				nd.Ops = &ops
			}
		}},
	}
}

// stateKeyAD binds a sealed key of the state to its host, node and field.
func stateKeyAD(host, node, field string) []byte {
	return []byte("moat agent-state key\x00" + host + "\x00" + node + "\x00" + field)
}

// stateKeyring returns the host key of the state file, making it if
// missing.
func (a *Agent) stateKeyring() (*secret.Keyring, error) {
	k, err := secret.LoadOrCreateKey(filepath.Join(a.cfg.DataDir, stateKeyFile))
	if err != nil {
		return nil, fmt.Errorf("agent state key: %w", err)
	}
	return k, nil
}

// loadState returns the persisted desired state, or nil when there is
// none.
func (a *Agent) loadState() (*apitype.HostDesired, error) {
	b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load agent state: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s state
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("load agent state: %w", err)
	}
	if s.Version != stateVersion && s.Version != 1 {
		return nil, fmt.Errorf("load agent state: version %d, want %d", s.Version, stateVersion)
	}
	if s.Desired.Host != a.cfg.Host {
		return nil, fmt.Errorf("load agent state: it is host %q's, not %q's", s.Desired.Host, a.cfg.Host)
	}
	if len(s.Sealed) == 0 {
		return &s.Desired, nil
	}
	keys, err := a.stateKeyring()
	if err != nil {
		return nil, fmt.Errorf("load agent state: %w", err)
	}
	for i, nd := range s.Desired.Nodes {
		sk, ok := s.Sealed[nd.NodeID]
		if !ok {
			continue
		}
		for _, f := range secretFields(&nd, &sk) {
			if *f.sealed == nil {
				continue
			}
			p, err := keys.Open(*f.sealed, stateKeyAD(a.cfg.Host, nd.NodeID, f.name))
			if err != nil {
				return nil, fmt.Errorf("load agent state: node %s: open %s: %w", nd.NodeID, f.name, err)
			}
			f.set(&s.Desired.Nodes[i], p)
		}
	}
	return &s.Desired, nil
}

// saveState writes d to agent-state.json atomically, mode 0600, with the
// nodes' secrets sealed under the host's state key.
func (a *Agent) saveState(d apitype.HostDesired) error {
	if d.Host == "" {
		d.Host = a.cfg.Host
	}
	// A restore's private key is never written down here: a restarted
	// agent gets it from the control plane again.
	d.Nodes = slices.Clone(d.Nodes)
	s := state{Version: stateVersion}
	var keys *secret.Keyring
	for i, nd := range d.Nodes {
		if nd.Restore != nil && nd.Restore.PrivateKeyPEM != "" {
			r := *nd.Restore
			r.PrivateKeyPEM = ""
			d.Nodes[i].Restore = &r
		}
		var sk sealedKeys
		sealed := false
		for _, f := range secretFields(&nd, &sk) {
			if f.plain == nil {
				continue
			}
			sealed = true
			if keys == nil {
				var err error
				if keys, err = a.stateKeyring(); err != nil {
					return fmt.Errorf("save agent state: %w", err)
				}
			}
			*f.sealed = keys.Seal(f.plain, stateKeyAD(d.Host, nd.NodeID, f.name))
			f.set(&d.Nodes[i], nil)
		}
		if !sealed {
			continue
		}
		if s.Sealed == nil {
			s.Sealed = map[string]sealedKeys{}
		}
		s.Sealed[nd.NodeID] = sk
	}
	s.Desired = d
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	return nil
}
