// Command moat is the single Moat binary: control plane, agent, CLI and
// simulator. All behaviour lives in internal/cli. The control plane, agent
// and simulator run on Linux only; built for macOS or Windows, moat is the
// tenant's command line and its server commands say they need Linux.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/moatdb/moat/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
