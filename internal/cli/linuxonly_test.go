package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestLinuxOnlyStandIn: on macOS and Windows the server side's commands
// are stand-ins that accept any arguments and fail with exit 1, saying
// that they need Linux and where to run them.
func TestLinuxOnlyStandIn(t *testing.T) {
	t.Parallel()
	root := &cobra.Command{Use: "moat", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(linuxOnly("server", "Run the control plane"))
	root.SetArgs([]string{"server", "--listen", "127.0.0.1:8443", "extra"})
	var out strings.Builder
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.Execute()
	if err == nil {
		t.Fatal("moat server stand-in succeeded")
	}
	msg, hint, code := describe(err)
	if code != exitError || !strings.HasPrefix(msg, "moat server needs Linux") || !strings.Contains(hint, "Linux machine") {
		t.Errorf("moat server stand-in = %q, hint %q, exit %d; want it to need Linux, exit %d", msg, hint, code, exitError)
	}
	if out.Len() != 0 {
		t.Errorf("stand-in printed %q", out.String())
	}
}
