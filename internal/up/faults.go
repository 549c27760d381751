package up

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/moatdb/moat/internal/atomicfile"
)

// FaultsFile, in a stack's data directory, holds the faults the simulator
// injected into its fleet (moat sim fail, partition, recover): moat up's
// supervisor keeps a failed host's agent stopped until it is recovered.
const FaultsFile = "sim-faults.json"

// Faults are the injected faults.
type Faults struct {
	// Failed hosts: agent stopped, nodes' PostgreSQL killed, links cut.
	Failed []string `json:"failed,omitempty"`
	// Partitioned hosts: their nodes' links cut, processes running.
	Partitioned []string `json:"partitioned,omitempty"`
}

// IsFailed reports whether host is failed.
func (f Faults) IsFailed(host string) bool { return slices.Contains(f.Failed, host) }

// ReadFaults reads dataDir's faults (none when the file is absent).
func ReadFaults(dataDir string) (Faults, error) {
	var f Faults
	b, err := os.ReadFile(filepath.Join(dataDir, FaultsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read faults: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("faults %s: %w", filepath.Join(dataDir, FaultsFile), err)
	}
	return f, nil
}

// WriteFaults stores f in dataDir (an empty f removes the file).
func WriteFaults(dataDir string, f Faults) error {
	path := filepath.Join(dataDir, FaultsFile)
	if len(f.Failed) == 0 && len(f.Partitioned) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}
