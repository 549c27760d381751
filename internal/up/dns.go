package up

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moatdb/moat/internal/atomicfile"
	"github.com/moatdb/moat/internal/dns"
)

// The platform DNS server runs in a process of its own (moat dns serve),
// so that names keep resolving while moat up is down or restarting: the
// control plane writes the zone to ZoneFile on every change and signals
// it; the server answers from the last zone it read. moat up starts it
// (or keeps the one a previous moat up on the data directory started) and
// Down stops it. Its files, under the data directory:
const (
	// ZoneFile is the zone the control plane writes.
	ZoneFile = "dns/zone.json"
	// dnsServerFile records the server process (dnsServer).
	dnsServerFile = "dns/server.json"
	// dnsLogFile is its log.
	dnsLogFile = "dns/server.log"
	// dnsReadyTimeout bounds its start.
	dnsReadyTimeout = 30 * time.Second
	// dnsCheckInterval is how often moat up checks that it still runs.
	dnsCheckInterval = time.Second
)

// dnsServer is the record of a running DNS server process.
type dnsServer struct {
	PID      int    `json:"pid"`
	Loopback string `json:"loopback"` // its address on the host's loopback
	Internet string `json:"internet"` // and on the simulated internet
	Prefix   string `json:"prefix"`   // of the stack whose internet it is in
	ZoneFile string `json:"zone_file"`
}

// readDNSServer returns the record of dataDir's DNS server if that process
// still runs (and is a moat dns serve of that zone file).
func readDNSServer(dataDir string) (dnsServer, bool) {
	var r dnsServer
	b, err := os.ReadFile(filepath.Join(dataDir, dnsServerFile))
	if err != nil || json.Unmarshal(b, &r) != nil || r.PID <= 0 {
		return r, false
	}
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(r.PID), "cmdline"))
	if err != nil {
		return r, false
	}
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	serving := len(args) > 2 && args[1] == "dns" && args[2] == "serve"
	var zone bool
	for i, a := range args {
		zone = zone || a == "--zone-file" && i+1 < len(args) && args[i+1] == r.ZoneFile
	}
	return r, serving && zone
}

// startDNS makes the platform DNS server answer on listen (loopback) and
// at s.InternetDNS: the server a previous moat up of this
// data directory started, if it still runs there, or a new one.
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
	if r, ok := readDNSServer(dir); ok {
		if r.Prefix == s.Cloud.Prefix() && r.Internet == s.InternetDNS.String() && sameListen(listen, r.Loopback) {
			if s.DNSAddr != r.Loopback {
				s.DNSAddr = r.Loopback
			}
			s.dnsPID.Store(int64(r.PID))
			return nil
		}
		if err := stopDNS(ctx, dir, 10*time.Second); err != nil {
			return err
		}
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// The sockets are bound here, the internet's inside its namespace,
	// and handed to the server.
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
		return fmt.Errorf("dns on %s: %w", listen, err)
	}
	if a := pc.LocalAddr().String(); a != s.DNSAddr {
		s.DNSAddr = a // (a restart by superviseDNS binds the same)
	}
	if err := add(pc, ln); err != nil {
		return fmt.Errorf("dns on %s: %w", listen, err)
	}
	err = s.Cloud.Do(s.Cloud.InternetNS(), func() error {
		pc, ln, err := dns.Listen(ctx, s.InternetDNS.String())
		if err != nil {
			return err
		}
		return add(pc, ln)
	})
	if err != nil {
		return fmt.Errorf("dns on the simulated internet: %w", err)
	}

	bin := cfg.MoatBinary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("start the dns server: %w", err)
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, dnsLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dns server log: %w", err)
	}
	defer logf.Close()
	cmd := &exec.Cmd{Path: bin, Args: []string{"moat", "dns", "serve", "--zone-file", zoneFile, "--domain", zone,
		"--inherited", strconv.Itoa(len(files) / 2), "--ready"}}
	cmd.ExtraFiles = files
	cmd.Stderr = logf
	// Its own session: it outlives moat up (and its terminal's signals).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("start the dns server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the dns server: %w", err)
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
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(dnsReadyTimeout):
		err = fmt.Errorf("not ready after %v", dnsReadyTimeout)
	}
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("dns server: %w (its log: %s)", err, logf.Name())
	}
	s.dnsPID.Store(int64(cmd.Process.Pid))
	rec, _ := json.Marshal(dnsServer{PID: cmd.Process.Pid, Loopback: s.DNSAddr, Internet: s.InternetDNS.String(), Prefix: s.Cloud.Prefix(), ZoneFile: zoneFile})
	if err := atomicfile.WriteFile(filepath.Join(dir, dnsServerFile), append(rec, '\n'), 0o600); err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("dns server record: %w", err)
	}
	return nil
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

// zoneWritten tells the DNS server process to reread the zone file.
func (s *Stack) zoneWritten() {
	if pid := int(s.dnsPID.Load()); pid > 0 {
		syscall.Kill(pid, syscall.SIGHUP) // if it is gone, superviseDNS restarts it
	}
}

// superviseDNS starts the DNS server process again (on the same addresses,
// from the zone file) if it ends while moat up runs. It returns nil when
// ctx ends.
func (s *Stack) superviseDNS(ctx context.Context) error {
	log := s.cfg.ControlPlane.Logger.With("component", "dns")
	t := time.NewTicker(dnsCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, ok := readDNSServer(s.cfg.ControlPlane.DataDir); ok {
			continue
		}
		cfg := s.cfg
		cfg.DNSListen = s.DNSAddr // the port it had
		if err := s.startDNS(ctx, cfg, s.DNS.Domain()); err != nil {
			if ctx.Err() == nil {
				log.Error("dns server process ended and does not restart; retrying", "err", err)
			}
			continue
		}
		log.Warn("dns server process ended; restarted", "pid", s.dnsPID.Load())
	}
}

// stopDNS stops dataDir's DNS server process, if it runs.
func stopDNS(ctx context.Context, dataDir string, timeout time.Duration) error {
	r, ok := readDNSServer(dataDir)
	if ok {
		syscall.Kill(r.PID, syscall.SIGTERM)
		if WaitGone(ctx, r.PID, timeout) != nil {
			syscall.Kill(r.PID, syscall.SIGKILL)
			if err := WaitGone(ctx, r.PID, timeout); err != nil {
				return fmt.Errorf("stop the dns server: %w", err)
			}
		}
	}
	if err := os.Remove(filepath.Join(dataDir, dnsServerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop the dns server: %w", err)
	}
	return nil
}
