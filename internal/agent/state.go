package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moatdb/moat/internal/apitype"
)

// stateVersion is the version of agent-state.json's format.
const stateVersion = 1

// state is agent-state.json: the last desired state received.
type state struct {
	Version int                 `json:"version"`
	Desired apitype.HostDesired `json:"desired"`
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
	if s.Version != stateVersion {
		return nil, fmt.Errorf("load agent state: version %d, want %d", s.Version, stateVersion)
	}
	if s.Desired.Host != a.cfg.Host {
		return nil, fmt.Errorf("load agent state: it is host %q's, not %q's", s.Desired.Host, a.cfg.Host)
	}
	return &s.Desired, nil
}

// saveState writes d to agent-state.json atomically, mode 0600.
func (a *Agent) saveState(d apitype.HostDesired) error {
	if d.Host == "" {
		d.Host = a.cfg.Host
	}
	b, err := json.Marshal(state{Version: stateVersion, Desired: d})
	if err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(a.cfg.DataDir, stateFile), b, 0o600, !a.cfg.NoSync); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, created with mode perm and renamed over path; with sync, the
// file and the directory are synced.
func writeFileAtomic(path string, data []byte, perm os.FileMode, sync bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	if sync {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	return nil
}
