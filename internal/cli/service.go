package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// defaultWait bounds --wait.
const defaultWait = 10 * time.Minute

// poll is how often --wait asks the server: 0, the client's backoff from
// 25 ms to 1 s (client.MinPoll, MaxPoll), unless a test set pollInterval.
func (a *app) poll() time.Duration { return a.pollInterval }

// waitFlags are the --wait and --timeout flags of a command.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) add(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until "+what)
	cmd.Flags().DurationVar(&w.timeout, "timeout", defaultWait, "give up waiting after this long")
}

// run calls fn with a context bounded by the timeout; when it runs out the
// error says what did not happen and how to check later.
func (w *waitFlags) run(ctx context.Context, what, later string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	err := fn(ctx)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return withHint(fmt.Errorf("timed out after %s waiting for %s", w.timeout, what), "it may still finish: check with "+later+", or wait longer with --timeout")
	}
	return err
}

func (a *app) serviceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "PostgreSQL services"}
	cmd.AddCommand(
		a.serviceCreateCmd(),
		&cobra.Command{
			Use:   "list",
			Short: "List the project's services",
			Args:  args(cobra.NoArgs),
			RunE: func(cmd *cobra.Command, _ []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				ss, err := cl.ListServices(cmd.Context(), p)
				if err != nil {
					return err
				}
				return a.print(ss)
			},
		},
		&cobra.Command{
			Use:   "get SVC",
			Short: "Show a service",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				s, err := cl.GetService(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(s)
			},
		},
		&cobra.Command{
			Use:   "delete SVC",
			Short: "Delete a service: its nodes are destroyed, their volumes wiped, its backups deleted",
			Args:  args(cobra.ExactArgs(1)),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, p, err := a.projectClient()
				if err != nil {
					return err
				}
				s, err := cl.DeleteService(cmd.Context(), p, args[0])
				if err != nil {
					return err
				}
				return a.print(s)
			},
		},
		a.serviceRestoreCmd(),
		a.servicePasswordCmd(),
		a.servicePsqlCmd(),
		a.allowlistCmd(),
		a.attachCmd(),
		a.detachCmd(),
		a.failoverCmd(),
		a.serviceUpdateCmd(),
		a.serviceUpgradeCmd(),
	)
	return cmd
}

func (a *app) serviceUpdateCmd() *cobra.Command {
	var (
		w          waitFlags
		nodes      int
		set, unset []string
	)
	cmd := &cobra.Command{
		Use:   "update SVC [--nodes N] [--set NAME=VALUE]... [--unset NAME]... [--wait]",
		Short: "Resize a service (1 to 3 nodes, rolled forward: no node is reused) or change its PostgreSQL settings",
		Long: `Resize a service to 1, 2 or 3 nodes (--nodes: new nodes catch up, leaving
nodes are wiped, no node is reused), or change its PostgreSQL settings
(--set NAME=VALUE, --unset NAME), or both.

Settings PostgreSQL applies on a reload (work_mem, statement_timeout, ...) are
in force on every node at once; those that need a restart (max_connections,
shared_buffers, max_worker_processes) are pending until moat service upgrade
moves the service to fresh nodes that start with them: a running node is
never restarted. moat service get shows the settings and those pending.

Settings a tenant may set: ` + settingNames() + `.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			resize := cmd.Flags().Changed("nodes")
			if !resize && len(set) == 0 && len(unset) == 0 {
				return withHint(usageErrorf("nothing to change"), "give --nodes N, --set NAME=VALUE or --unset NAME")
			}
			settings, err := parseSettingArgs(set, unset)
			if err != nil {
				return err
			}
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			if resize {
				op, err := cl.UpdateService(cmd.Context(), p, args[0], apitype.ServiceUpdate{Nodes: &nodes, Settings: settings})
				if err != nil {
					return err
				}
				return a.followOperation(cmd.Context(), cl, p, op, w)
			}
			s, err := cl.UpdateServiceSettings(cmd.Context(), p, args[0], settings)
			if err != nil {
				return err
			}
			if w.wait {
				err := w.run(cmd.Context(), "the nodes of service "+s.ID+" to reload its settings", "moat service get "+s.ID, func(ctx context.Context) error {
					var werr error
					s, werr = cl.WaitSettings(ctx, p, s.ID, a.poll())
					return werr
				})
				if err != nil {
					return err
				}
			}
			return a.print(s)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 0, "the service's new node count, 1 to 3")
	cmd.Flags().StringArrayVar(&set, "set", nil, "set a PostgreSQL setting, NAME=VALUE (repeatable)")
	cmd.Flags().StringArrayVar(&unset, "unset", nil, "remove a PostgreSQL setting: its default again (repeatable)")
	w.add(cmd, "the resize is done and the old nodes are wiped, or every node reloaded the settings")
	return cmd
}

// parseSettingArgs turns --set NAME=VALUE and --unset NAME into the
// request's settings (nil for none).
func parseSettingArgs(set, unset []string) (map[string]*apitype.SettingValue, error) {
	if len(set) == 0 && len(unset) == 0 {
		return nil, nil
	}
	out := map[string]*apitype.SettingValue{}
	for _, kv := range set {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, withHint(usageErrorf("--set %q is not NAME=VALUE", kv), "write it like --set statement_timeout=30s")
		}
		if _, dup := out[k]; dup {
			return nil, usageErrorf("setting %s is given twice", k)
		}
		sv := apitype.SettingValue(v)
		out[k] = &sv
	}
	for _, k := range unset {
		if _, dup := out[k]; dup {
			return nil, usageErrorf("setting %s is given twice", k)
		}
		out[k] = nil
	}
	return out, nil
}

// settingNames lists the catalog's settings.
func settingNames() string {
	var names []string
	for _, s := range domain.SettingCatalog() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func (a *app) serviceUpgradeCmd() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "upgrade SVC [--wait]",
		Short: "Move a service to fresh nodes, which start with its settings pending a restart: they catch up, the primary switches over (writes pause at most a second), the old nodes are wiped",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			op, err := cl.UpgradeService(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			return a.followOperation(cmd.Context(), cl, p, op, w)
		},
	}
	w.add(cmd, "the upgrade is done and the old nodes are wiped")
	return cmd
}

func (a *app) failoverCmd() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "failover SVC [--wait]",
		Short: "Fence the primary and promote the replica with the most WAL; the old primary is replaced by a new node",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			op, err := cl.FailoverService(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			return a.followOperation(cmd.Context(), cl, p, op, w)
		},
	}
	w.add(cmd, "the failover is done and the replacement streams")
	return cmd
}

func (a *app) serviceCreateCmd() *cobra.Command {
	var (
		in    apitype.ServiceCreate
		allow []string
		w     waitFlags
	)
	cmd := &cobra.Command{
		Use:   "create --name N --region R [--nodes 1..3] [--allow CIDR[=desc]]... [--wait]",
		Short: "Create a service (open to the internet unless --allow is given)",
		Long: `Create a service (open to the internet unless --allow is given).

The admin user's password is printed once and saved, readable by you only,
in passwords.json next to the CLI config, where moat service psql finds it.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.createService(cmd.Context(), in, allow, w)
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Name, "name", "", "service name")
	f.StringVar(&in.Region, "region", "", "region (moat region list)")
	f.IntVar(&in.Nodes, "nodes", 1, "number of nodes, 1 to 3 (node 0 is the primary)")
	f.StringArrayVar(&allow, "allow", nil, "allowed source CIDR[=description] (repeatable; default: open to the internet)")
	w.add(cmd, "the service is running")
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("region")
	return cmd
}

// createService creates the service in (with the --allow entries),
// saves and shows its admin password, and with --wait waits until it runs.
func (a *app) createService(ctx context.Context, in apitype.ServiceCreate, allow []string, w waitFlags) error {
	if len(allow) > 0 {
		entries, err := parseAllowArgs(allow)
		if err != nil {
			return err
		}
		in.AllowedIPs = entries
	}
	cl, p, err := a.projectClient()
	if err != nil {
		return err
	}
	s, err := cl.CreateService(ctx, p, in)
	if err != nil {
		return err
	}
	// The password is shown only in this response: save it before
	// anything else can go wrong, show it whatever happens next.
	var (
		cred    = credential{Password: s.AdminPassword}
		path    string
		saveErr error
	)
	if s.Connection != nil {
		cred.User = s.Connection.User
	}
	if cred.Password != "" {
		path, saveErr = a.storePassword(s.ID, cred)
	}
	if w.wait {
		created := s
		err = w.run(ctx, "service "+s.ID+" to be running", "moat service get "+s.ID, func(ctx context.Context) error {
			var werr error
			s, werr = cl.WaitService(ctx, p, s.ID, a.poll())
			return werr
		})
		s.AdminPassword = created.AdminPassword
		if err != nil {
			if cred.Password != "" {
				fmt.Fprintf(a.stderr, "service %s was created; its admin password: %s\n%s\n", created.ID, cred.Password, passwordNote(path, saveErr))
			}
			return err
		}
	}
	if err := a.print(s); err != nil {
		return err
	}
	if cred.Password == "" {
		return nil
	}
	return a.showPassword(cred, path, saveErr)
}

func (a *app) serviceRestoreCmd() *cobra.Command {
	var (
		in     apitype.ServiceCreate
		from   apitype.RestoreFrom
		toTime string
		allow  []string
		w      waitFlags
	)
	cmd := &cobra.Command{
		Use:   "restore --from SVC [--to-time RFC3339] --name N [--wait]",
		Short: "Create a new service from another service's backups (point-in-time recovery)",
		Long: `Create a new service from another service's backups: the newest base backup
that ended before --to-time, plus the archived WAL up to that time (point-in-time
recovery). Without --to-time, everything the source committed until the
request. The new service is in the source's region, has the source's number of
nodes and allowlist unless --nodes and --allow say otherwise, its own admin
password (printed once) and its own backup key; it is on the internet (attach
it to a VPC afterwards); the source keeps running.

List the backups, and so the earliest time a restore can reach, with
moat backup list SVC.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if toTime != "" {
				t, err := time.Parse(time.RFC3339Nano, toTime)
				if err != nil {
					return withHint(usageErrorf("--to-time %q is not an RFC 3339 time", toTime), "write it like 2026-11-23T21:05:00Z or 2026-11-23T22:05:00.5+01:00")
				}
				from.ToTime = &t
			}
			in.RestoreFrom = &from
			return a.createService(cmd.Context(), in, allow, w)
		},
	}
	f := cmd.Flags()
	f.StringVar(&from.ServiceID, "from", "", "the service to restore from")
	f.StringVar(&toTime, "to-time", "", "recover to this time (RFC 3339); default: everything committed so far")
	f.StringVar(&in.Name, "name", "", "the new service's name")
	f.IntVar(&in.Nodes, "nodes", 0, "number of nodes, 1 to 3 (default: the source's)")
	f.StringArrayVar(&allow, "allow", nil, "allowed source CIDR[=description] (repeatable; default: the source's allowlist)")
	w.add(cmd, "the restored service is running")
	cmd.MarkFlagRequired("from")
	cmd.MarkFlagRequired("name")
	return cmd
}

// printOperation prints op and, with --wait, follows it to its end; a
// failed operation is an error.
func (a *app) followOperation(ctx context.Context, cl *client.Client, p string, op apitype.Operation, w waitFlags) error {
	if !w.wait {
		return a.print(op)
	}
	if a.output == "table" {
		fmt.Fprintf(a.stderr, "waiting for operation %s (%s)...\n", op.ID, op.Type)
	}
	err := w.run(ctx, "operation "+op.ID, "moat operation get "+op.ID, func(ctx context.Context) error {
		var werr error
		op, werr = cl.WaitOperation(ctx, p, op.ID, a.poll())
		return werr
	})
	var fe *client.OperationFailedError
	if errors.As(err, &fe) {
		if perr := a.print(fe.Op); perr != nil {
			return perr
		}
		return withHint(err, "see moat operation get "+op.ID)
	}
	if err != nil {
		return err
	}
	return a.print(op)
}

func (a *app) attachCmd() *cobra.Command {
	var (
		vpc string
		w   waitFlags
	)
	cmd := &cobra.Command{
		Use:   "attach SVC --vpc V [--wait]",
		Short: "Attach a service to a VPC, or move it to another (it loses public access)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			op, err := cl.AttachService(cmd.Context(), p, args[0], apitype.AttachRequest{VPCID: vpc})
			if err != nil {
				return err
			}
			return a.followOperation(cmd.Context(), cl, p, op, w)
		},
	}
	cmd.Flags().StringVar(&vpc, "vpc", "", "ID of a VPC of this project in the service's region")
	cmd.MarkFlagRequired("vpc")
	w.add(cmd, "the operation has finished")
	return cmd
}

func (a *app) detachCmd() *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "detach SVC [--wait]",
		Short: "Detach a service from its VPC (it becomes public, filtered by its allowlist)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, p, err := a.projectClient()
			if err != nil {
				return err
			}
			op, err := cl.DetachService(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			return a.followOperation(cmd.Context(), cl, p, op, w)
		},
	}
	w.add(cmd, "the operation has finished")
	return cmd
}
