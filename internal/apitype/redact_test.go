package apitype_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatdb/moat/internal/apitype"
)

// TestKeyMaterialRedacted: the private keys of a host's desired state
// never appear in a log (text or JSON handler, the whole state or a part)
// or in fmt's output (every common verb), yet marshal to JSON for the
// agent and come back intact.
func TestKeyMaterialRedacted(t *testing.T) {
	const nodeKey, replKey, backupKey = "NODE-KEY-secret-1", "REPL-KEY-secret-2", "BACKUP-KEY-secret-3"
	d := apitype.HostDesired{Host: "h1", Revision: 7, Nodes: []apitype.NodeDesired{{
		NodeID: "node-a", State: "running",
		TLS:     apitype.NodeTLS{CertPEM: "CERT", KeyPEM: nodeKey, ReplCertPEM: "RCERT", ReplKeyPEM: replKey},
		Restore: &apitype.NodeRestore{SourceServiceID: "svc-a", PrivateKeyPEM: backupKey, BackupLabel: "L"},
	}}}
	secrets := []string{nodeKey, replKey, backupKey}

	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		log := slog.New(h)
		log.Info("desired", "desired", d)
		log.Info("node", "node", d.Nodes[0], "tls", d.Nodes[0].TLS, "restore", d.Nodes[0].Restore)
		log.Info("pointer", "desired", &d)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		for _, v := range []any{d, &d, d.Nodes[0], d.Nodes[0].TLS, d.Nodes[0].Restore, *d.Nodes[0].Restore, []apitype.NodeDesired{d.Nodes[0]}} {
			fmt.Fprintf(&logs, verb+"\n", v)
		}
	}
	out := logs.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("key material %q printed or logged:\n%s", s, out)
		}
	}
	if !strings.Contains(out, apitype.Redacted) || !strings.Contains(out, "CERT") || !strings.Contains(out, "node-a") {
		t.Errorf("the redacted output lost what is not secret:\n%s", out)
	}

	wire, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if !bytes.Contains(wire, []byte(s)) {
			t.Errorf("JSON for the agent lacks key material %q: %s", s, wire)
		}
	}
	var back apitype.HostDesired
	if err := json.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(d, back); diff != "" {
		t.Errorf("JSON round trip (-sent +received):\n%s", diff)
	}
}
