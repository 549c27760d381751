package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/atomicfile"
)

func (a *app) caCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The project CA, which clients verify services' certificates with"}
	var out string
	get := &cobra.Command{
		Use:   "get [--out FILE]",
		Short: "Print the project CA certificate (PEM), for sslrootcert with sslmode=verify-full",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			ca, err := cl.GetProjectCA(cmd.Context(), p)
			if err != nil {
				return err
			}
			pemText := ca.PEM
			if !strings.HasSuffix(pemText, "\n") {
				pemText += "\n"
			}
			if out != "" {
				if err := atomicfile.WriteFile(out, []byte(pemText), 0o644); err != nil {
					return fmt.Errorf("write the CA: %w", err)
				}
				return nil
			}
			if a.output == "json" {
				return a.print(ca)
			}
			_, err = fmt.Fprint(a.stdout, pemText)
			return err
		},
	}
	get.Flags().StringVar(&out, "out", "", "write the PEM to FILE (mode 0644) instead of printing it")
	cmd.AddCommand(get)
	return cmd
}
