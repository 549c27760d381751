package cli

import (
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/dns"
)

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
(SERVFAIL until the first). moat up starts several (--dns-servers), all on
the same sockets it bound (--inherited: N UDP/TCP pairs from file descriptor
3 on, some inside the simulated internet's namespace), so that when one dies
the others answer its share; moat down stops them. SIGHUP rereads the zone
file at once (moat up sends it to each after every write); SIGTERM stops it.`,
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
			var socks []dns.Socket
			if inherited > 0 {
				socks, err = dns.InheritedSockets(inherited)
			} else {
				socks, err = dns.ListenAll(ctx, listen)
			}
			if err != nil {
				return err
			}
			var onReady func()
			if ready {
				out := cmd.OutOrStdout()
				onReady = func() { fmt.Fprintln(out, "ready") }
			}
			return srv.ServeZoneFile(ctx, zoneFile, poll, socks, onReady)
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
