package up

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/dns"
)

// The platform DNS is served by processes of their own (moat dns serve),
// so that names keep resolving while moat up is down or restarting: the
// control plane writes the zone to ZoneFile on every change and signals
// every server; each answers from the last zone it read. There are
// several (Config.DNSServers) on the same sockets, which moat up binds
// once and hands to each: the kernel gives every datagram and connection
// to one of the processes receiving, so when one dies the others answer
// everything (a query the dead one had read is lost: the client's retry
// is answered). moat up starts them (or keeps those a previous moat up
// on the data directory started, taking the sockets back from one of them
// with pidfd_getfd), starts another on the same sockets when one ends
// while it runs, and Down stops them all. Their files, under the data
// directory:
const (
	// ZoneFile is the zone the control plane writes.
	ZoneFile = "dns/zone.json"
	// dnsServerFile records the server processes (dnsRecord).
	dnsServerFile = "dns/server.json"
	// dnsLogFile is their log.
	dnsLogFile = "dns/server.log"
	// dnsReadyTimeout bounds a server's start.
	dnsReadyTimeout = 30 * time.Second
	// dnsCheckInterval is how often moat up checks that they still run.
	dnsCheckInterval = time.Second
	// dnsStopTimeout bounds the stop of a server moat up no longer wants.
	dnsStopTimeout = 10 * time.Second
)

// DNS server processes per stack (Config.DNSServers).
const (
	DefaultDNSServers = 2
	MaxDNSServers     = 5
)

// dnsRecord is the record of a data directory's DNS server processes.
type dnsRecord struct {
	PIDs []int `json:"pids"`
	// PID is the one server of a record written before there were
	// several; such a server is replaced (its sockets are not recorded).
	PID int `json:"pid,omitempty"`
	// Sockets are the inode numbers of the sockets every server holds,
	// UDP then TCP for Loopback and for Internet: how a later moat up
	// finds them in a server to take them back.
	Sockets  []uint64 `json:"sockets,omitempty"`
	Loopback string   `json:"loopback"` // their address on the host's loopback
	Internet string   `json:"internet"` // and on the simulated internet
	Prefix   string   `json:"prefix"`   // of the stack whose internet it is in
	ZoneFile string   `json:"zone_file"`
}

// isDNSServer reports whether pid is a moat dns serve of zoneFile (a
// recorded pid may have been reused by any other process since).
func isDNSServer(pid int, zoneFile string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	serving := len(args) > 2 && args[1] == "dns" && args[2] == "serve"
	var zone bool
	for i, a := range args {
		zone = zone || a == "--zone-file" && i+1 < len(args) && args[i+1] == zoneFile
	}
	return serving && zone
}

// readDNSServers returns the record of dataDir's DNS servers and those of
// its processes that still run (and are moat dns serve of its zone file).
func readDNSServers(dataDir string) (r dnsRecord, live []int) {
	b, err := os.ReadFile(filepath.Join(dataDir, dnsServerFile))
	if err != nil || json.Unmarshal(b, &r) != nil {
		return dnsRecord{}, nil
	}
	for _, pid := range append(slices.Clone(r.PIDs), r.PID) {
		if isDNSServer(pid, r.ZoneFile) && !slices.Contains(live, pid) {
			live = append(live, pid)
		}
	}
	return r, live
}

// dnsGroup runs a data directory's DNS server processes, all on the same
// sockets (files), and keeps their record.
type dnsGroup struct {
	dir, domain, bin string
	n                int
	log              *slog.Logger

	mu    sync.Mutex // serialises ensure, adopt, use and close
	rec   dnsRecord  // PIDs: the servers, started or adopted
	files []*os.File // the shared sockets, held while this process runs
	// pids are rec.PIDs for signal, which must not wait for mu (a start
	// holds it while it waits for the new server).
	pids atomic.Pointer[[]int]
}

func newDNSGroup(dir, domain, bin string, n int, log *slog.Logger) *dnsGroup {
	g := &dnsGroup{dir: dir, domain: domain, bin: bin, n: n, log: log}
	g.pids.Store(new([]int))
	return g
}

// zoneFile is the zone file the group's servers follow.
func (g *dnsGroup) zoneFile() string { return filepath.Join(g.dir, ZoneFile) }

// adopt takes over the servers a previous moat up of the directory left
// running, if they serve what want describes (its prefix and internet
// address, and a loopback address sameListen accepts): it takes their
// sockets back from one of them. Otherwise it stops them and returns false.
func (g *dnsGroup) adopt(ctx context.Context, want dnsRecord) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, live := readDNSServers(g.dir)
	if len(live) == 0 {
		return false, nil
	}
	if r.Prefix == want.Prefix && r.Internet == want.Internet && sameListen(want.Loopback, r.Loopback) && r.ZoneFile == g.zoneFile() && len(r.Sockets) > 0 {
		var errs []error
		for _, pid := range live {
			files, err := takeSockets(pid, r.Sockets)
			if err == nil {
				g.rec, g.files = r, files
				if err := g.record(live); err != nil { // without the servers that ended
					g.files = nil
					for _, f := range files {
						f.Close()
					}
					return false, err
				}
				return true, nil
			}
			errs = append(errs, err)
		}
		g.log.Warn("dns servers' sockets cannot be taken back; starting new servers", "err", errors.Join(errs...))
	}
	if err := stopDNS(ctx, g.dir, dnsStopTimeout); err != nil {
		return false, err
	}
	return false, nil
}

// use makes files (UDP then TCP per address) the sockets of the servers
// the group starts; rec describes them (its PIDs and Sockets are set here).
func (g *dnsGroup) use(files []*os.File, rec dnsRecord) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	rec.PIDs, rec.PID, rec.Sockets, rec.ZoneFile = nil, 0, nil, g.zoneFile()
	for _, f := range files {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("dns socket: %w", err)
		}
		rec.Sockets = append(rec.Sockets, fi.Sys().(*syscall.Stat_t).Ino)
	}
	g.rec, g.files = rec, files
	g.pids.Store(new([]int))
	return nil
}

// ensure brings the group to n running servers: it forgets those that
// ended, starts new ones on the sockets and stops any beyond n (the last
// started first). It returns how many it started.
func (g *dnsGroup) ensure(ctx context.Context) (started int, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.files == nil {
		return 0, errors.New("dns servers: no sockets")
	}
	var pids []int
	for _, pid := range g.rec.PIDs {
		if isDNSServer(pid, g.rec.ZoneFile) {
			pids = append(pids, pid)
		}
	}
	changed := len(pids) != len(g.rec.PIDs)
	for len(pids) > g.n {
		stopPIDs(ctx, pids[len(pids)-1:], dnsStopTimeout)
		pids, changed = pids[:len(pids)-1], true
	}
	if changed {
		if err := g.record(pids); err != nil {
			return 0, err
		}
	}
	for len(pids) < g.n {
		pid, err := g.start(ctx)
		if err != nil {
			return started, err
		}
		pids = append(pids, pid)
		started++
		// Recorded at once: a moat up killed now leaves no server unknown.
		if err := g.record(pids); err != nil {
			return started, err
		}
	}
	return started, nil
}

// record makes pids the group's servers and writes its record.
func (g *dnsGroup) record(pids []int) error {
	g.rec.PIDs = slices.Clone(pids)
	p := slices.Clone(pids)
	g.pids.Store(&p)
	return g.write()
}

// write writes the group's record.
func (g *dnsGroup) write() error {
	rec, _ := json.Marshal(g.rec)
	if err := atomicfile.WriteFile(filepath.Join(g.dir, dnsServerFile), append(rec, '\n'), 0o600); err != nil {
		return fmt.Errorf("dns server record: %w", err)
	}
	return nil
}

// start starts one server on the group's sockets and waits until it is
// ready.
func (g *dnsGroup) start(ctx context.Context) (int, error) {
	logf, err := os.OpenFile(filepath.Join(g.dir, dnsLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("dns server log: %w", err)
	}
	defer logf.Close()
	cmd := &exec.Cmd{Path: g.bin, Args: []string{"moat", "dns", "serve", "--zone-file", g.rec.ZoneFile, "--domain", g.domain,
		"--inherited", strconv.Itoa(len(g.files) / 2), "--ready"}}
	cmd.ExtraFiles = g.files
	cmd.Stderr = logf
	// Its own session: it outlives moat up (and its terminal's signals).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("start a dns server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start a dns server: %w", err)
	}
	// Reap it if it ends while this process runs (moat down, a test).
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != dnsReady {
			err = fmt.Errorf("unexpected output %q", line)
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("exited before it was ready")
		}
		ready <- err
	}()
	t := time.NewTimer(dnsReadyTimeout)
	defer t.Stop()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = fmt.Errorf("not ready after %v", dnsReadyTimeout)
	}
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return 0, fmt.Errorf("dns server: %w (its log: %s)", err, logf.Name())
	}
	return cmd.Process.Pid, nil
}

// signal tells every server to reread the zone file.
func (g *dnsGroup) signal() {
	zf := g.zoneFile()
	for _, pid := range *g.pids.Load() {
		if isDNSServer(pid, zf) { // a pid reused since is not signalled
			syscall.Kill(pid, syscall.SIGHUP) // if it is gone, ensure starts another
		}
	}
}

// close closes this process's copies of the sockets (the servers keep
// theirs).
func (g *dnsGroup) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.files {
		f.Close()
	}
	g.files = nil
}

// takeSockets duplicates into this process the sockets of the given inode
// numbers that process pid holds (pidfd_getfd, Linux 5.6).
func takeSockets(pid int, inodes []uint64) ([]*os.File, error) {
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, fmt.Errorf("sockets of dns server %d: %w", pid, err)
	}
	held := map[uint64]int{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		ino, err1 := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		fd, err2 := strconv.Atoi(e.Name())
		if err1 == nil && err2 == nil {
			held[ino] = fd
		}
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("sockets of dns server %d: pidfd_open: %w", pid, err)
	}
	defer unix.Close(pidfd)
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("sockets of dns server %d: %w", pid, err)
	}
	for _, ino := range inodes {
		target, ok := held[ino]
		if !ok {
			return fail(fmt.Errorf("socket %d not held", ino))
		}
		fd, err := unix.PidfdGetfd(pidfd, target, 0)
		if err != nil {
			return fail(fmt.Errorf("pidfd_getfd: %w", err))
		}
		f := os.NewFile(uintptr(fd), "dns-socket")
		files = append(files, f)
		// The descriptor may have been closed and reused since ReadDir.
		if fi, err := f.Stat(); err != nil || fi.Sys().(*syscall.Stat_t).Ino != ino {
			return fail(fmt.Errorf("socket %d moved", ino))
		}
	}
	return files, nil
}

// startDNS makes the platform DNS servers answer on listen (loopback) and
// at s.InternetDNS: the servers a previous moat up of this data directory
// started, if they still run there, or new ones.
func (s *Stack) startDNS(ctx context.Context, cfg Config, zone string) error {
	dir := cfg.ControlPlane.DataDir
	zoneFile := filepath.Join(dir, ZoneFile)
	// Root's alone, like everything root owns in the data directory (the
	// DNS server runs as root).
	if err := os.MkdirAll(filepath.Dir(zoneFile), 0o700); err != nil {
		return fmt.Errorf("dns directory: %w", err)
	}
	if err := os.Chmod(filepath.Dir(zoneFile), 0o700); err != nil {
		return fmt.Errorf("dns directory: %w", err)
	}
	listen := cfg.DNSListen
	if listen == "" {
		listen = "127.0.0.1:8053"
	}
	bin := cfg.MoatBinary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("start the dns servers: %w", err)
		}
	}
	s.dnsServers = newDNSGroup(dir, zone, bin, cfg.DNSServers, cfg.ControlPlane.Logger.With("component", "dns"))
	want := dnsRecord{Loopback: listen, Internet: s.InternetDNS.String(), Prefix: s.Cloud.Prefix()}
	adopted, err := s.dnsServers.adopt(ctx, want)
	if err != nil {
		return err
	}
	if adopted {
		s.DNSAddr = s.dnsServers.rec.Loopback
	} else {
		files, loopback, err := s.bindDNS(ctx, listen)
		if err != nil {
			return err
		}
		want.Loopback, s.DNSAddr = loopback, loopback
		if err := s.dnsServers.use(files, want); err != nil {
			s.dnsServers.close()
			return err
		}
	}
	if _, err := s.dnsServers.ensure(ctx); err != nil {
		stopDNS(ctx, dir, dnsStopTimeout)
		s.dnsServers.close()
		return err
	}
	return nil
}

// bindDNS binds the DNS sockets: on listen (loopback) and at
// s.InternetDNS inside the internet's namespace. It returns them as files,
// UDP then TCP for each address, and the loopback address bound.
func (s *Stack) bindDNS(ctx context.Context, listen string) (files []*os.File, loopback string, err error) {
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	add := func(pc net.PacketConn, ln net.Listener) error {
		defer pc.Close()
		defer ln.Close()
		u, err := pc.(*net.UDPConn).File()
		if err != nil {
			return err
		}
		files = append(files, u)
		t, err := ln.(*net.TCPListener).File()
		if err != nil {
			return err
		}
		files = append(files, t)
		return nil
	}
	pc, ln, err := dns.Listen(ctx, listen)
	if err != nil {
		return nil, "", fmt.Errorf("dns on %s: %w", listen, err)
	}
	loopback = pc.LocalAddr().String()
	if err := add(pc, ln); err != nil {
		return nil, "", fmt.Errorf("dns on %s: %w", listen, err)
	}
	err = s.Cloud.Do(s.Cloud.InternetNS(), func() error {
		pc, ln, err := dns.Listen(ctx, s.InternetDNS.String())
		if err != nil {
			return err
		}
		return add(pc, ln)
	})
	if err != nil {
		return nil, "", fmt.Errorf("dns on the simulated internet: %w", err)
	}
	return files, loopback, nil
}

// dnsReady is what moat dns serve --ready writes on its standard output
// once it answers (and takes SIGHUP as a reload).
const dnsReady = "ready"

// sameListen reports whether a server on have serves the address want
// asks for (port 0: any port of that host).
func sameListen(want, have string) bool {
	wh, wp, err1 := net.SplitHostPort(want)
	hh, hp, err2 := net.SplitHostPort(have)
	return err1 == nil && err2 == nil && wh == hh && (wp == hp || wp == "0")
}

// zoneWritten tells the DNS server processes to reread the zone file.
func (s *Stack) zoneWritten() {
	if s.dnsServers != nil {
		s.dnsServers.signal()
	}
}

// superviseDNS starts a DNS server process again (on the same sockets,
// from the zone file) when one ends while moat up runs. It returns nil
// when ctx ends.
func (s *Stack) superviseDNS(ctx context.Context) error {
	t := time.NewTicker(dnsCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := s.dnsServers.ensure(ctx)
		if err != nil && ctx.Err() == nil {
			s.dnsServers.log.Error("dns server process ended and does not restart; retrying", "err", err)
		}
		if n > 0 {
			s.dnsServers.log.Warn("dns server process ended; restarted", "started", n, "pids", *s.dnsServers.pids.Load())
		}
	}
}

// stopDNS stops dataDir's DNS server processes, those that run.
func stopDNS(ctx context.Context, dataDir string, timeout time.Duration) error {
	_, live := readDNSServers(dataDir)
	if err := stopPIDs(ctx, live, timeout); err != nil {
		return fmt.Errorf("stop the dns servers: %w", err)
	}
	if err := os.Remove(filepath.Join(dataDir, dnsServerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop the dns servers: %w", err)
	}
	return nil
}

// stopPIDs stops the processes (SIGTERM, then SIGKILL after timeout).
func stopPIDs(ctx context.Context, pids []int, timeout time.Duration) error {
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	var errs []error
	for _, pid := range pids {
		if WaitGone(ctx, pid, timeout) != nil {
			syscall.Kill(pid, syscall.SIGKILL)
			errs = append(errs, WaitGone(ctx, pid, timeout))
		}
	}
	return errors.Join(errs...)
}
