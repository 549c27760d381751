package domain

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func str(s string) *string { return &s }

func settingsService() *Service {
	return &Service{Meta: Meta{ID: "svc-x", State: StateRunning}, NodeCount: 3}
}

func TestChangeSettingsValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, value string
		code, field string
		// msg and hint are parts of the error's message and hint.
		msg, hint string
		canon     string
	}{
		{name: "statement_timeout", value: "30s", canon: "30s"},
		{name: "statement_timeout", value: " 1500 ", canon: "1500"},
		{name: "statement_timeout", value: "0", canon: "0"},
		{name: "statement_timeout", value: "8d", code: CodeInvalidSetting, field: "settings.statement_timeout", msg: "out of range", hint: "0 to 7d"},
		{name: "statement_timeout", value: "30 seconds", code: CodeInvalidSetting, field: "settings.statement_timeout", msg: "not a time", hint: "0 to 7d"},
		{name: "statement_timeout", value: "-1", code: CodeInvalidSetting, field: "settings.statement_timeout", msg: "out of range"},
		{name: "log_min_duration_statement", value: "-1", canon: "-1"},
		{name: "log_min_duration_statement", value: "-2", code: CodeInvalidSetting, hint: "or -1 for off"},
		{name: "max_connections", value: "200", canon: "200"},
		{name: "max_connections", value: "19", code: CodeInvalidSetting, field: "settings.max_connections", hint: "20 to 5000"},
		{name: "max_connections", value: "5001", code: CodeInvalidSetting, hint: "20 to 5000"},
		{name: "max_connections", value: "1e3", code: CodeInvalidSetting, msg: "not an integer"},
		{name: "shared_buffers", value: "256MB", canon: "256MB"},
		{name: "shared_buffers", value: "2048", canon: "2048"}, // 2048 pages of 8 kB: 16MB
		{name: "shared_buffers", value: "2047", code: CodeInvalidSetting, hint: "16MB to 32GB"},
		{name: "shared_buffers", value: "64GB", code: CodeInvalidSetting, hint: "16MB to 32GB"},
		{name: "shared_buffers", value: "256mb", code: CodeInvalidSetting, msg: "not an amount of memory"},
		{name: "work_mem", value: "64kB", canon: "64kB"},
		{name: "work_mem", value: "32", code: CodeInvalidSetting, hint: "64kB to 2GB"},
		{name: "random_page_cost", value: "1.10", canon: "1.1"},
		{name: "random_page_cost", value: "NaN", code: CodeInvalidSetting},
		{name: "default_statistics_target", value: "10001", code: CodeInvalidSetting, hint: "1 to 10000"},
		{name: "timezone", value: "Europe/Paris", canon: "Europe/Paris"},
		{name: "timezone", value: "Mars/Olympus", code: CodeInvalidSetting, msg: "unknown"},
		{name: "timezone", value: "../etc", code: CodeInvalidSetting, msg: "not a time zone"},
		{name: "statment_timeout", value: "1s", code: CodeInvalidSetting, field: "settings.statment_timeout", msg: `no setting "statment_timeout"`, hint: "did you mean statement_timeout?"},
		{name: "work_memory", value: "1MB", code: CodeInvalidSetting, hint: "did you mean work_mem"},
		{name: "ssl_ciphers", value: "ALL", code: CodeMoatSetting, field: "settings.ssl_ciphers", msg: "is Moat's own"},
		{name: "listen_addresses", value: "*", code: CodeMoatSetting, msg: "is Moat's own"},
		{name: "synchronous_standby_names", value: "*", code: CodeMoatSetting, msg: "is Moat's own"},
		{name: "archive_command", value: "true", code: CodeMoatSetting, msg: "is Moat's own"},
	} {
		svc := settingsService()
		zones := func(z string) bool { return z != "Mars/Olympus" }
		_, err := svc.ChangeSettings(SettingsChange{tc.name: str(tc.value)}, zones, time.Unix(1, 0))
		if tc.code == "" {
			if err != nil {
				t.Errorf("ChangeSettings(%s=%q) = %v, want nil", tc.name, tc.value, err)
			} else if got := svc.Settings[tc.name]; got != tc.canon {
				t.Errorf("ChangeSettings(%s=%q) stored %q, want %q", tc.name, tc.value, got, tc.canon)
			}
			continue
		}
		e := AsError(err)
		if e == nil || e.Code != tc.code || (tc.field != "" && e.Field != tc.field) || !strings.Contains(e.Msg, tc.msg) || !strings.Contains(e.Hint, tc.hint) {
			t.Errorf("ChangeSettings(%s=%q) = %v, want code %s field %q message ~%q hint ~%q", tc.name, tc.value, err, tc.code, tc.field, tc.msg, tc.hint)
		}
		if svc.Settings != nil {
			t.Errorf("ChangeSettings(%s=%q) failed but stored %v", tc.name, tc.value, svc.Settings)
		}
	}
}

func TestChangeSettingsRestartSplit(t *testing.T) {
	t.Parallel()
	svc := settingsService()
	res, err := svc.ChangeSettings(SettingsChange{
		"statement_timeout": str("5s"), "work_mem": str("8MB"), "max_connections": str("200"), "shared_buffers": str("256MB"),
	}, nil, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := SettingsResult{Reload: []string{"statement_timeout", "work_mem"}, Restart: []string{"max_connections", "shared_buffers"}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("ChangeSettings split (-want +got):\n%s", diff)
	}
	if got, want := svc.PendingRestart(), []string{"max_connections", "shared_buffers"}; !cmp.Equal(got, want) {
		t.Errorf("PendingRestart() = %v, want %v", got, want)
	}
	// The same values again change nothing; a removal is a change.
	res, err = svc.ChangeSettings(SettingsChange{"statement_timeout": str("5s"), "work_mem": nil}, nil, time.Unix(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(SettingsResult{Reload: []string{"work_mem"}}, res); diff != "" {
		t.Errorf("second change (-want +got):\n%s", diff)
	}

	// A node of the service runs the reload-only settings as they are
	// and the restart ones it started with.
	old := NewNode(svc, 0, "a", time.Unix(3, 0))
	if diff := cmp.Diff(map[string]string{"statement_timeout": "5s"}, NodeSettings(svc, old)); diff != "" {
		t.Errorf("NodeSettings(old node) (-want +got):\n%s", diff)
	}
	// An upgrade's nodes start with the pending ones; its end applies
	// them.
	plan := &RollPlan{Type: OpServiceUpgrade, Settings: svc.restartSettings()}
	op := NewOperation("", OpServiceUpgrade, svc.ID, time.Unix(3, 0))
	if err := op.Start(StepAddNodes, time.Unix(3, 0)); err != nil {
		t.Fatal(err)
	}
	op.Roll = &Roll{Plan: *plan}
	fresh := NewRollNode(svc, op.Roll, 1, "b", time.Unix(4, 0))
	want2 := map[string]string{"statement_timeout": "5s", "max_connections": "200", "shared_buffers": "256MB"}
	if diff := cmp.Diff(want2, NodeSettings(svc, fresh)); diff != "" {
		t.Errorf("NodeSettings(upgrade's node) (-want +got):\n%s", diff)
	}
	resize := &Roll{Plan: RollPlan{Type: OpServiceResize}}
	if got := NewRollNode(svc, resize, 2, "c", time.Unix(4, 0)).Settings; got != nil {
		t.Errorf("a resize's new node starts with %v, want the nodes' (none)", got)
	}
	if err := FinishRoll(svc, op, time.Unix(5, 0)); err != nil {
		t.Fatal(err)
	}
	if got := svc.PendingRestart(); got != nil {
		t.Errorf("PendingRestart() after the upgrade = %v, want none", got)
	}
	if got := NewNode(svc, 3, "a", time.Unix(6, 0)).Settings; !cmp.Equal(got, map[string]string{"max_connections": "200", "shared_buffers": "256MB"}) {
		t.Errorf("a node made after the upgrade starts with %v", got)
	}

	// max_connections cannot go below the nodes' value (a fresh replica
	// replays the primary's WAL); above is fine, and pending.
	_, err = svc.ChangeSettings(SettingsChange{"max_connections": str("150")}, nil, time.Unix(7, 0))
	if e := AsError(err); e == nil || e.Code != CodeSettingLowered || e.Field != "settings.max_connections" || e.Kind != Conflict || !strings.Contains(e.Msg, "below 200") {
		t.Errorf("lowering max_connections = %v, want a %s conflict naming 200", err, CodeSettingLowered)
	}
	if _, err := svc.ChangeSettings(SettingsChange{"max_connections": nil}, nil, time.Unix(7, 0)); AsError(err) == nil || AsError(err).Code != CodeSettingLowered {
		t.Errorf("removing max_connections (back to 100) = %v, want %s", err, CodeSettingLowered)
	}
	if _, err := svc.ChangeSettings(SettingsChange{"max_connections": str("300"), "shared_buffers": nil}, nil, time.Unix(7, 0)); err != nil {
		t.Fatal(err)
	}
	if got, want := svc.PendingRestart(), []string{"max_connections", "shared_buffers"}; !cmp.Equal(got, want) {
		t.Errorf("PendingRestart() = %v, want %v", got, want)
	}
}

func TestChangeSettingsState(t *testing.T) {
	t.Parallel()
	svc := settingsService()
	svc.OperationID = "op-1"
	_, err := svc.ChangeSettings(SettingsChange{"work_mem": str("8MB")}, nil, time.Unix(1, 0))
	if e := AsError(err); e == nil || e.Kind != Conflict || e.Code != CodeOperationInProgress {
		t.Errorf("ChangeSettings during an operation = %v, want a conflict", err)
	}
	svc.OperationID = ""
	_, err = svc.ChangeSettings(SettingsChange{}, nil, time.Unix(1, 0))
	if e := AsError(err); e == nil || e.Field != "settings" || e.Code != CodeRequired {
		t.Errorf("ChangeSettings({}) = %v, want settings required", err)
	}
}

func TestSettingCatalogBounds(t *testing.T) {
	t.Parallel()
	for _, s := range SettingCatalog() {
		if s.Type == SettingZone {
			continue
		}
		// Every bound parses (bound panics otherwise) and the default
		// is a valid value.
		if s.bound(s.Min) > s.bound(s.Max) {
			t.Errorf("%s: min %s above max %s", s.Name, s.Min, s.Max)
		}
		if _, err := s.Check(s.Default, nil); err != nil {
			t.Errorf("%s: default %s: %v", s.Name, s.Default, err)
		}
		if isMoatSetting(s.Name) {
			t.Errorf("%s is in the catalog and Moat's own", s.Name)
		}
	}
}

func TestSettingsApplying(t *testing.T) {
	t.Parallel()
	svc := settingsService()
	svc.SettingsRevision = 10
	node := func(state string, applied int64) *Node {
		return &Node{Meta: Meta{State: state}, ServiceID: svc.ID, AppliedRevision: applied}
	}
	for _, tc := range []struct {
		nodes []*Node
		want  bool
	}{
		{[]*Node{node(StateRunning, 10), node(StateRunning, 11)}, false},
		{[]*Node{node(StateRunning, 10), node(StateRunning, 9)}, true},
		// A node being made or wiped does not hold it up.
		{[]*Node{node(StateRunning, 10), node(StateCreating, 0), node(StateDeleting, 3)}, false},
	} {
		if got := svc.SettingsApplying(tc.nodes); got != tc.want {
			t.Errorf("SettingsApplying(%d nodes) = %v, want %v", len(tc.nodes), got, tc.want)
		}
	}
}
