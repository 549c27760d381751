package up

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/provider/local"
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

// IsPartitioned reports whether host is partitioned.
func (f Faults) IsPartitioned(host string) bool { return slices.Contains(f.Partitioned, host) }

// Failure injection (moat sim fail, partition, recover): what a machine
// failure or a network partition does to a host of dataDir's fleet, on
// this machine. The faults are recorded first, so that moat up's
// supervisor keeps a failed host's agent down and the host's relay to the
// API (hostLink) stays cut, whichever process injected them.

// FailHost fails host: its agent is killed (SIGKILL) and kept down, its
// nodes' PostgreSQL killed (SIGKILL), their links and the agent's link to
// the API cut. It returns the nodes it cut off. (The nodes' encrypted
// volume servers keep running: they stand for the disks.)
func FailHost(ctx context.Context, dataDir, host string) ([]string, error) {
	r, err := fleetHost(dataDir, host)
	if err != nil {
		return nil, err
	}
	if err := updateFaults(dataDir, func(f *Faults) { f.Failed = addName(f.Failed, host) }); err != nil {
		return nil, err
	}
	if pid := AgentPID(dataDir, host); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
		WaitGone(ctx, pid, agentStopTimeout)
	}
	for _, f := range postmasterFiles(AgentDir(dataDir, host)) {
		if pid := postmasterPID(f); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
			WaitGone(ctx, pid, agentStopTimeout)
		}
	}
	return setNodeLinks(ctx, dataDir, r, false)
}

// FailAZ fails every host of az (FailHost) and returns their names.
func FailAZ(ctx context.Context, dataDir, az string) ([]string, error) {
	rec, err := ReadRecord(dataDir)
	if err != nil {
		return nil, err
	}
	var hosts []string
	var azs []string
	for _, h := range rec.Hosts {
		azs = addName(azs, h.AZ)
		if h.AZ == az {
			hosts = append(hosts, h.Name)
		}
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("no host of this stack is in AZ %q (AZs: %s)", az, strings.Join(azs, ", "))
	}
	for _, h := range hosts {
		if _, err := FailHost(ctx, dataDir, h); err != nil {
			return hosts, err
		}
	}
	return hosts, nil
}

// PartitionHost cuts host off: its nodes' links and its agent's link to
// the API; its agent and PostgreSQL keep running. It returns the nodes it
// cut off.
func PartitionHost(ctx context.Context, dataDir, host string) ([]string, error) {
	r, err := fleetHost(dataDir, host)
	if err != nil {
		return nil, err
	}
	if err := updateFaults(dataDir, func(f *Faults) { f.Partitioned = addName(f.Partitioned, host) }); err != nil {
		return nil, err
	}
	return setNodeLinks(ctx, dataDir, r, false)
}

// Recover ends every fault: links restored, failed hosts' agents started
// again by moat up (which restart their PostgreSQL). It returns the hosts
// it recovered.
func Recover(ctx context.Context, dataDir string) ([]string, error) {
	f, err := ReadFaults(dataDir)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, h := range append(slices.Clone(f.Failed), f.Partitioned...) {
		hosts = addName(hosts, h)
	}
	var errs []error
	for _, h := range hosts {
		if _, err := setNodeLinks(ctx, dataDir, h, true); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return hosts, err
	}
	return hosts, WriteFaults(dataDir, Faults{})
}

// fleetHost checks that host is one of dataDir's fleet.
func fleetHost(dataDir, host string) (string, error) {
	rec, err := ReadRecord(dataDir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, h := range rec.Hosts {
		if h.Name == host {
			return host, nil
		}
		names = append(names, h.Name)
	}
	return "", fmt.Errorf("%q is not a host of this stack (hosts: %s)", host, strings.Join(names, ", "))
}

// setNodeLinks cuts or restores the links of the nodes whose data is
// under host's agent, and returns their IDs.
func setNodeLinks(ctx context.Context, dataDir, host string, up bool) ([]string, error) {
	rec, err := ReadRecord(dataDir)
	if err != nil {
		return nil, err
	}
	cloud, err := Cloud(rec.Prefix)
	if err != nil {
		return nil, err
	}
	entries, _ := os.ReadDir(filepath.Join(AgentDir(dataDir, host), "nodes"))
	var ids []string
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		ids = append(ids, e.Name())
		if _, err := cloud.SetLinks(ctx, local.NodeNamespace(cloud, e.Name()), up); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", e.Name(), err))
		}
	}
	return ids, errors.Join(errs...)
}

// updateFaults changes dataDir's faults with fn.
func updateFaults(dataDir string, fn func(*Faults)) error {
	f, err := ReadFaults(dataDir)
	if err != nil {
		return err
	}
	fn(&f)
	return WriteFaults(dataDir, f)
}

func addName(names []string, n string) []string {
	if slices.Contains(names, n) {
		return names
	}
	return append(names, n)
}

// postmasterFiles are the postmaster.pid files of the nodes under an
// agent directory (in their directories or on their volumes).
func postmasterFiles(agentDir string) []string {
	inNodes, _ := filepath.Glob(filepath.Join(agentDir, "nodes", "*", "pgdata", "postmaster.pid"))
	// Only the volumes' mountpoints (named by node ID): the containers
	// and their FUSE mounts (node-….luks, node-….luks.fuse) are not
	// looked into, since a FUSE mount whose server is gone may not answer.
	ents, _ := os.ReadDir(filepath.Join(agentDir, "volumes"))
	var onVolumes []string
	for _, e := range ents {
		if !strings.Contains(e.Name(), ".") {
			onVolumes = append(onVolumes, filepath.Join(agentDir, "volumes", e.Name(), "pgdata", "postmaster.pid"))
		}
	}
	return append(inNodes, onVolumes...)
}

// postmasterPID is the live postmaster of a postmaster.pid file, or 0.
func postmasterPID(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}
