package up

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/controlplane"
)

// RecordFile is the file in a data directory that names the namespace
// prefix of the stack that lives there. `moat down` removes only that
// prefix's namespaces, and the commands that read the simulator use it.
const RecordFile = "stack.json"

// ErrNoStack is returned by ReadRecord and Down for a data directory in
// which no stack was started.
var ErrNoStack = errors.New("no stack of moat up was started in this data directory")

// Record is what a data directory remembers of its stack.
type Record struct {
	// Prefix names the stack's namespaces (see localcloud.Config.Prefix).
	Prefix string `json:"prefix"`
	// Agents are the pids of the fleet's agent processes, by host (the
	// last started; Down stops those still running).
	Agents map[string]int `json:"agents,omitempty"`
	// Hosts are the fleet's hosts (the simulator fails them by name or
	// AZ).
	Hosts []FleetHost `json:"hosts,omitempty"`
}

// ReadRecord reads dataDir's record; ErrNoStack when there is none.
func ReadRecord(dataDir string) (Record, error) {
	var r Record
	b, err := os.ReadFile(filepath.Join(dataDir, RecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("%s: %w", dataDir, ErrNoStack)
	}
	if err != nil {
		return r, fmt.Errorf("read stack record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Prefix == "" {
		return r, fmt.Errorf("stack record %s: not a record (%v)", filepath.Join(dataDir, RecordFile), err)
	}
	return r, nil
}

// writeRecord claims dataDir for a stack with prefix. A data directory
// holds one stack: one whose record names another prefix is refused, and
// so is a prefix whose namespaces exist without this directory's record
// (they belong to another data directory's stack), unless the directory
// ran a stack before records were kept (it has an operator token).
func writeRecord(dataDir, prefix string, existing []string) error {
	r, err := ReadRecord(dataDir)
	switch {
	case err == nil && r.Prefix == prefix:
		return nil
	case err == nil:
		return fmt.Errorf("data directory %s belongs to the stack with namespace prefix %q, not %q: run moat down --data-dir %s first, or use another data directory", dataDir, r.Prefix, prefix, dataDir)
	case !errors.Is(err, ErrNoStack):
		return err
	case len(existing) > 0 && !ranBefore(dataDir):
		return fmt.Errorf("namespaces %s* exist (%s, ...) but belong to no stack of data directory %s: another moat up uses them; take it down with moat down --data-dir ITS-DIR, or give this one its own prefix (MOAT_LOCALCLOUD_PREFIX=moat-TAG-)", prefix, existing[0], dataDir)
	}
	return putRecord(dataDir, Record{Prefix: prefix})
}

// putRecord writes r as dataDir's record.
func putRecord(dataDir string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dataDir, RecordFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write stack record: %w", err)
	}
	return nil
}

// ranBefore reports whether a control plane has run in dataDir.
func ranBefore(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, controlplane.AdminTokenFile))
	return err == nil
}
