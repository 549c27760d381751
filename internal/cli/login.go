package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
)

func (a *app) loginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "login --url URL --ca FILE [--token-file F] [--project P]",
		Short: "Check credentials against the server and store them in the config file",
		Long: `login checks the URL, token and CA against the server (it lists the projects
the token may see) and stores them in the config file. The token comes from
MOAT_TOKEN or --token-file (--token works, but shows it in the process list).
The config file is MOAT_CONFIG, else
$XDG_CONFIG_HOME/moat/config.json, else ~/.config/moat/config.json (mode 0600).
Flags and MOAT_* variables still override the stored values later.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.resolve()
			if err != nil {
				return err
			}
			if c.caFile != "" {
				pem, err := os.ReadFile(c.caFile)
				if err != nil {
					return withHint(fmt.Errorf("read CA: %w", err), "pass the server's api-ca.pem with --ca")
				}
				c.caPEM, c.caFile = pem, ""
			}
			cl, c, err := newClient(c)
			if err != nil {
				return err
			}
			ps, err := cl.ListProjects(cmd.Context())
			if err != nil {
				return err
			}
			if c.project == "" && len(ps) == 1 {
				c.project = ps[0].ID
			}
			if c.project != "" && !slices.ContainsFunc(ps, func(p apitype.Project) bool { return p.ID == c.project }) {
				return withHint(errors.New("project "+c.project+" is not visible to this token"), "check --project, or omit it (moat project list)")
			}
			path, err := a.configPath()
			if err != nil {
				return err
			}
			if err := saveConfig(path, fileConfig{URL: c.url, Token: c.token, CAPEM: string(c.caPEM), Project: c.project}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "logged in to %s; saved %s\n", cl.URL(), path)
			if c.project != "" {
				fmt.Fprintf(a.stdout, "project: %s\n", c.project)
			}
			return nil
		},
	}
}
