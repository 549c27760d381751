package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/moatdb/moat/internal/cli"
)

// TestMain runs the test binary as moat when PostgreSQL's archive_command
// calls it so (the agent installs it as <data>/bin/moat).
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "moat" {
		os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
