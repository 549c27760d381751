package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// pgbenchConfig is the fixed pgbench load: the same on both volumes.
type pgbenchConfig struct {
	scale, clients, seconds, runs int
}

// cluster is a PostgreSQL server whose data directory is on a mount,
// run as the postgres user, reachable on a Unix socket only.
type cluster struct {
	bin, data, sock string
	port            int
	cred            *syscall.Credential
}

// newCluster initdb's a cluster under mnt and starts it. Durability is
// PostgreSQL's default (fsync, synchronous_commit, full_page_writes on):
// each commit's WAL flush reaches the volume.
func newCluster(mnt, sock string, port int) (*cluster, error) {
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return nil, fmt.Errorf("pg_config --bindir: %w", err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	c := &cluster{bin: strings.TrimSpace(string(out)), data: filepath.Join(mnt, "pgdata"), sock: sock, port: port,
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	for _, d := range []string{c.data, c.sock} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"); err != nil {
		return nil, err
	}
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories='%s' -p %d -c shared_buffers=128MB -c max_wal_size=2GB -c checkpoint_timeout=30min -c max_connections=40", c.sock, c.port)
	if err := c.run("pg_ctl", "start", "-w", "-D", c.data, "-l", filepath.Join(c.sock, "log"), "-o", opts); err != nil {
		return nil, err
	}
	return c, nil
}

// run runs one of PostgreSQL's programs as the postgres user.
func (c *cluster) run(prog string, args ...string) error {
	_, err := c.output(prog, args...)
	return err
}

func (c *cluster) output(prog string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.bin, prog), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "PGHOST=" + c.sock, "PGPORT=" + strconv.Itoa(c.port), "PGUSER=postgres", "PGDATABASE=postgres"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", prog, err, out)
	}
	return string(out), nil
}

func (c *cluster) stop() {
	if err := c.run("pg_ctl", "stop", "-w", "-m", "fast", "-D", c.data); err != nil {
		fmt.Fprintln(os.Stderr, "bench/volume:", err)
	}
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// tps runs pgbench's TPC-B-like load once and returns its transactions
// per second.
func (c *cluster) tps(p pgbenchConfig) (float64, error) {
	out, err := c.output("pgbench", "-n", "-c", strconv.Itoa(p.clients), "-j", "2", "-T", strconv.Itoa(p.seconds))
	if err != nil {
		return 0, err
	}
	m := tpsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
	}
	return strconv.ParseFloat(m[1], 64)
}

// pgbench runs the same pgbench load on a cluster on the plain volume and
// one on the encrypted volume, alternating runs, and prints the medians.
func pgbench(work string, plain, enc *mounted, p pgbenchConfig) error {
	if p.runs <= 0 {
		return nil
	}
	// The postgres user reaches its sockets and its data directories.
	for _, d := range []string{work, filepath.Dir(plain.mnt), filepath.Dir(enc.mnt), plain.mnt, enc.mnt} {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	var clusters []*cluster
	defer func() {
		for _, c := range clusters {
			c.stop()
		}
	}()
	for i, m := range []*mounted{plain, enc} {
		c, err := newCluster(m.mnt, filepath.Join(work, fmt.Sprintf("sock%d", i)), 55432+i)
		if err != nil {
			return err
		}
		clusters = append(clusters, c)
		if err := c.run("pgbench", "-i", "-q", "-s", strconv.Itoa(p.scale)); err != nil {
			return err
		}
		if err := c.run("psql", "-Xq", "-c", "CHECKPOINT"); err != nil {
			return err
		}
	}
	tps := make([][]float64, 2)
	for range p.runs {
		for i, c := range clusters {
			t, err := c.tps(p)
			if err != nil {
				return err
			}
			tps[i] = append(tps[i], t)
		}
	}
	med := func(v []float64) float64 {
		slices.Sort(v)
		return v[len(v)/2]
	}
	if len(tps[0]) == 0 {
		return errors.New("pgbench: no runs")
	}
	pl, en := med(tps[0]), med(tps[1])
	fmt.Printf("\n| pgbench (TPC-B-like), scale %d, %d clients, %d s × %d runs | plain loop + ext4 | encrypted (userspace) | ratio |\n|---|---:|---:|---:|\n",
		p.scale, p.clients, p.seconds, p.runs)
	fmt.Printf("| TPS (median) | %.0f | %.0f | %.2f× |\n", pl, en, en/pl)
	fmt.Printf("| TPS (all runs) | %s | %s | |\n", joinF(tps[0]), joinF(tps[1]))
	return nil
}

func joinF(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = strconv.FormatFloat(f, 'f', 0, 64)
	}
	return strings.Join(s, ", ")
}
