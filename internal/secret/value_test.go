package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secretText = "s3cr3t-hunter2-XYZ"

type holder struct {
	Name   string
	Pass   Value
	hidden Value
}

func TestValueNeverPrints(t *testing.T) {
	t.Parallel()
	v := New(secretText)
	h := holder{Name: "n", Pass: v, hidden: v}
	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s"} {
		outputs = append(outputs, fmt.Sprintf(verb, v), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	outputs = append(outputs, fmt.Sprint(v), fmt.Sprintln(v, h), v.String())
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(js))
	for _, out := range outputs {
		if strings.Contains(out, secretText) || strings.Contains(out, fmt.Sprintf("%x", secretText)) {
			t.Errorf("output reveals the secret: %s", out)
		}
	}
	if got := fmt.Sprint(v); got != Redacted {
		t.Errorf("Sprint(v) = %q, want %q", got, Redacted)
	}
	if v.Reveal() != secretText {
		t.Errorf("Reveal() = %q, want %q", v.Reveal(), secretText)
	}
}

func TestValueSlog(t *testing.T) {
	t.Parallel()
	v := New(secretText)
	k := mustKeyring(t, testKey(7))
	var buf bytes.Buffer
	for _, h := range []slog.Handler{
		slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}),
	} {
		log := slog.New(h)
		log.Info("login", "password", v)
		log.Info("login", slog.Any("password", v), slog.Any("holder", holder{Pass: v, hidden: v}))
		log.With("token", v).Info("with")
		log.WithGroup("g").Info("group", "password", v, "keyring", k)
		log.Debug("formatted", "msg", fmt.Sprintf("%v", v))
	}
	out := buf.String()
	if strings.Contains(out, secretText) {
		t.Errorf("log output reveals the secret:\n%s", out)
	}
	if n := strings.Count(out, Redacted); n < 10 {
		t.Errorf("log output has %d REDACTED, want at least 10:\n%s", n, out)
	}
	if !strings.Contains(out, k.KeyID()) {
		t.Errorf("keyring did not log its key ID:\n%s", out)
	}
}

func TestValueEqual(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b Value
		want bool
	}{
		{New("a"), New("a"), true},
		{New("a"), New("b"), false},
		{New(""), Value{}, true},
		{New("a"), Value{}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("New(%q).Equal(New(%q)) = %v, want %v", tt.a.Reveal(), tt.b.Reveal(), got, tt.want)
		}
	}
	if !(Value{}).IsZero() || New("x").IsZero() {
		t.Errorf("IsZero wrong")
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	t.Parallel()
	k := mustKeyring(t, testKey(9))
	for _, verb := range []string{"%v", "%+v", "%#v", "%x"} {
		if got, want := fmt.Sprintf(verb, k), "secret.Keyring("+k.KeyID()+")"; got != want {
			t.Errorf("Sprintf(%q, keyring) = %q, want %q", verb, got, want)
		}
	}
}
