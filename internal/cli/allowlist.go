package cli

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// parseAllowArgs parses CIDR[=description] arguments. The CIDR is passed to
// the server as written (a bare address is the server's to widen to /32 or
// /128, and a non-canonical prefix the server's to refuse with a hint).
func parseAllowArgs(in []string) ([]apitype.AllowEntry, error) {
	out := make([]apitype.AllowEntry, 0, len(in))
	for _, s := range in {
		cidr, desc, _ := strings.Cut(s, "=")
		cidr = strings.TrimSpace(cidr)
		if cidr == "" {
			return nil, usageErrorf("allowlist entry %q has no CIDR; write CIDR or CIDR=description", s)
		}
		out = append(out, apitype.AllowEntry{CIDR: cidr, Description: desc})
	}
	return out, nil
}

// allowKey is the form an entry's CIDR is compared in when editing: what
// the server stores for it (a bare address as a /32 or /128).
func allowKey(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String()
	}
	if ad, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(ad, ad.BitLen()).String()
	}
	return s
}

// addEntries returns cur with add merged in: a CIDR already listed keeps its
// place and takes the new description when one is given.
func addEntries(cur, add []apitype.AllowEntry) []apitype.AllowEntry {
	out := slices.Clone(cur)
	for _, e := range add {
		i := slices.IndexFunc(out, func(c apitype.AllowEntry) bool { return allowKey(c.CIDR) == allowKey(e.CIDR) })
		switch {
		case i < 0:
			out = append(out, e)
		case e.Description != "":
			out[i].Description = e.Description
		}
	}
	return out
}

// removeEntries returns cur without the CIDRs of rm; each must be listed.
func removeEntries(cur []apitype.AllowEntry, rm []string) ([]apitype.AllowEntry, error) {
	out := slices.Clone(cur)
	for _, r := range rm {
		i := slices.IndexFunc(out, func(c apitype.AllowEntry) bool { return allowKey(c.CIDR) == allowKey(r) })
		if i < 0 {
			return nil, fmt.Errorf("%s is not in the allowlist", r)
		}
		out = slices.Delete(out, i, i+1)
	}
	return out, nil
}

func (a *app) allowlistCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "allowlist",
		Short: "A service's allowed source ranges (applied to every node immediately)",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "get SVC",
			Short: "Show a service's allowlist, its revision and whether it is applied",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				al, _, err := cl.GetAllowlist(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(al)
			},
		},
		a.allowlistSetCmd(),
		a.allowlistEditCmd("add"),
		a.allowlistEditCmd("remove"),
	)
	return cmd
}

// finishAllowlist prints al after waiting, with --wait, until it is applied.
func (a *app) finishAllowlist(ctx context.Context, cl *client.Client, p, svc string, al apitype.Allowlist, w waitFlags) error {
	if w.wait && !al.Applied {
		err := w.run(ctx, fmt.Sprintf("allowlist revision %d of %s to be applied", al.Revision, svc), "moat service allowlist get "+svc, func(ctx context.Context) error {
			var werr error
			al, werr = cl.WaitAllowlist(ctx, p, svc, al.Revision, a.poll())
			return werr
		})
		if err != nil {
			return err
		}
	}
	return a.print(al)
}

func (a *app) allowlistSetCmd() *cobra.Command {
	var (
		confirmEmpty bool
		ifMatch      string
		w            waitFlags
	)
	cmd := &cobra.Command{
		Use:   "set SVC [CIDR[=description]]... [--confirm-empty] [--wait]",
		Short: "Replace a service's allowlist (no CIDR: refuse everyone, needs --confirm-empty)",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc := args[0]
			entries, err := parseAllowArgs(args[1:])
			if err != nil {
				return err
			}
			if len(entries) == 0 && !confirmEmpty {
				// The server refuses this too; say so before connecting,
				// in the server's words.
				_, err := domain.NormalizeAllowlist(nil, domain.AllowlistOptions{})
				return err
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			al, _, err := cl.PutAllowlist(cmd.Context(), p, svc, apitype.AllowlistUpdate{AllowedIPs: entries, ConfirmEmpty: confirmEmpty}, ifMatch)
			if err != nil {
				return err
			}
			return a.finishAllowlist(cmd.Context(), cl, p, svc, al, w)
		},
	}
	cmd.Flags().BoolVar(&confirmEmpty, "confirm-empty", false, "allow an empty list, which refuses every connection")
	cmd.Flags().StringVar(&ifMatch, "if-match", "", "only if the allowlist is still at this revision (the ETag of allowlist get)")
	w.add(cmd, "every node enforces the new list")
	return cmd
}

// allowlistEditCmd is add or remove: read, change and write back with
// If-Match, reapplying the change when someone else wrote in between.
func (a *app) allowlistEditCmd(verb string) *cobra.Command {
	var (
		confirmEmpty bool
		w            waitFlags
	)
	cmd := &cobra.Command{
		Use:   verb + " SVC CIDR[=description]...",
		Short: "Add entries to a service's allowlist (a listed CIDR takes the new description)",
		Args:  args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc := args[0]
			var edit func([]apitype.AllowEntry) ([]apitype.AllowEntry, error)
			if verb == "add" {
				entries, err := parseAllowArgs(args[1:])
				if err != nil {
					return err
				}
				edit = func(cur []apitype.AllowEntry) ([]apitype.AllowEntry, error) { return addEntries(cur, entries), nil }
			} else {
				edit = func(cur []apitype.AllowEntry) ([]apitype.AllowEntry, error) {
					out, err := removeEntries(cur, args[1:])
					if err != nil {
						return nil, withHint(err, "moat service allowlist get "+svc+" shows the list")
					}
					return out, nil
				}
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			al, err := cl.EditAllowlist(cmd.Context(), p, svc, confirmEmpty, 0, edit)
			if err != nil {
				return err
			}
			return a.finishAllowlist(cmd.Context(), cl, p, svc, al, w)
		},
	}
	if verb == "remove" {
		cmd.Use = "remove SVC CIDR..."
		cmd.Short = "Remove entries from a service's allowlist"
		cmd.Flags().BoolVar(&confirmEmpty, "confirm-empty", false, "allow removing the last entry, which refuses every connection")
	}
	w.add(cmd, "every node enforces the new list")
	return cmd
}
