package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/dns"
)

// DNSInheritedFirstFD is the first file descriptor of the sockets moat up
// passes to moat dns serve: pairs of UDP then TCP sockets.
const DNSInheritedFirstFD = 3

// dnsCommands returns moat dns, whose serve subcommand is the platform's
// DNS server in a process of its own (started by moat up), answering from
// the zone file the control plane writes.
func dnsCommands() []*cobra.Command {
	d := &cobra.Command{
		Use:   "dns",
		Short: "The platform's DNS server (run by moat up)",
	}
	d.AddCommand(dnsServeCmd())
	return []*cobra.Command{d}
}

func dnsServeCmd() *cobra.Command {
	var zoneFile, domain string
	var listen []string
	var inherited int
	var poll time.Duration
	var ready bool
	c := &cobra.Command{
		Use:   "serve --zone-file FILE (--listen ADDR ... | --inherited N)",
		Short: "Answer for the service zone from the zone file the control plane writes",
		Long: `Serve the platform's service zone (authoritative, UDP and TCP) from the zone
file the control plane writes on every change, rereading it when it changes.
It runs apart from the control plane so that names keep resolving while the
control plane is down or restarting: it answers from the last zone it read
(SERVFAIL until the first). moat up starts it with its sockets already
bound (--inherited: N UDP/TCP pairs from file descriptor 3 on, some inside
the simulated internet's namespace) and moat down stops it. SIGHUP rereads the
zone file at once (moat up sends it after each write); SIGTERM stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (len(listen) == 0) == (inherited == 0) {
				return usageErrorf("give --listen addresses or --inherited sockets (one of them)")
			}
			if poll <= 0 {
				return usageErrorf("--poll %v: want a positive interval, such as 250ms", poll)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			srv, err := dns.New(dns.Config{Domain: domain, Logger: log})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			socks, err := dnsSockets(ctx, listen, inherited)
			if err != nil {
				return err
			}
			var onReady func()
			if ready {
				out := cmd.OutOrStdout()
				onReady = func() { fmt.Fprintln(out, "ready") }
			}
			return serveDNS(ctx, srv, zoneFile, poll, socks, log, onReady)
		},
	}
	c.Flags().StringVar(&zoneFile, "zone-file", "", "the zone file the control plane writes")
	c.Flags().StringVar(&domain, "domain", dns.DefaultDomain, "the service zone")
	c.Flags().StringArrayVar(&listen, "listen", nil, "an address to answer on, UDP and TCP (repeatable), such as 127.0.0.1:8053")
	c.Flags().IntVar(&inherited, "inherited", 0, "answer on N inherited UDP/TCP socket pairs (file descriptors 3, 4, …; moat up)")
	c.Flags().DurationVar(&poll, "poll", 250*time.Millisecond, "how often to check the zone file for a change")
	c.Flags().BoolVar(&ready, "ready", false, `write "ready" on standard output once serving (moat up waits for it)`)
	_ = c.MarkFlagRequired("zone-file")
	return c
}

type dnsSocket struct {
	pc net.PacketConn
	ln net.Listener
}

// dnsSockets binds the listen addresses, or takes n inherited socket
// pairs.
func dnsSockets(ctx context.Context, listen []string, n int) ([]dnsSocket, error) {
	var out []dnsSocket
	closeAll := func() {
		for _, s := range out {
			s.pc.Close()
			s.ln.Close()
		}
	}
	for _, a := range listen {
		pc, ln, err := dns.Listen(ctx, a)
		if err != nil {
			closeAll()
			return nil, err
		}
		out = append(out, dnsSocket{pc, ln})
	}
	for i := range n {
		fd := DNSInheritedFirstFD + 2*i
		udp, tcp := os.NewFile(uintptr(fd), "dns-udp"), os.NewFile(uintptr(fd+1), "dns-tcp")
		pc, err := net.FilePacketConn(udp)
		udp.Close()
		if err != nil {
			tcp.Close()
			closeAll()
			return nil, fmt.Errorf("inherited socket %d: %w", fd, err)
		}
		ln, err := net.FileListener(tcp)
		tcp.Close()
		if err != nil {
			pc.Close()
			closeAll()
			return nil, fmt.Errorf("inherited socket %d: %w", fd+1, err)
		}
		out = append(out, dnsSocket{pc, ln})
	}
	return out, nil
}

// serveDNS follows the zone file and answers on socks until ctx ends or a
// socket fails.
func serveDNS(ctx context.Context, srv *dns.Server, zoneFile string, poll time.Duration, socks []dnsSocket, log *slog.Logger, ready func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(socks)+1)
	// SIGHUP: the control plane wrote a new zone.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
			case <-ctx.Done():
				return
			}
			select {
			case reload <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { errc <- srv.FollowZoneFile(ctx, zoneFile, poll, reload) }()
	for _, s := range socks {
		log.Info("dns listening", "addr", s.ln.Addr().String(), "zone", srv.Domain(), "zone_file", zoneFile)
		go func() { errc <- srv.Serve(ctx, s.pc, s.ln) }()
	}
	if ready != nil {
		ready() // the sockets are bound (queries wait in them) and SIGHUP is handled
	}
	var errs []error
	for range len(socks) + 1 {
		if err := <-errc; err != nil {
			errs = append(errs, err)
			cancel()
		}
	}
	return errors.Join(errs...)
}
