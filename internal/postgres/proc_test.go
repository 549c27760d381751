package postgres

import (
	"strings"
	"testing"
)

func TestParseControlData(t *testing.T) {
	out := `pg_control version number:            1300
Database cluster state:               shut down
Latest checkpoint location:           0/8000028
Latest checkpoint's REDO location:    0/8000028
`
	if lsn, ok, err := parseControlData(out); lsn != "0/8000028" || !ok || err != nil {
		t.Errorf("parseControlData(shut down) = %q, %v, %v; want 0/8000028, clean", lsn, ok, err)
	}
	crashed := strings.Replace(out, "shut down", "in production", 1)
	if lsn, ok, err := parseControlData(crashed); lsn != "0/8000028" || ok || err != nil {
		t.Errorf("parseControlData(in production) = %q, %v, %v; want not clean", lsn, ok, err)
	}
	if _, _, err := parseControlData("garbage"); err == nil {
		t.Error("parseControlData(garbage) succeeded")
	}
}
