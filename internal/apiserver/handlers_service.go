package apiserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/password"
	"github.com/moatdb/moat/internal/store"
)

func (s *Server) allowOpts(confirmEmpty bool) domain.AllowlistOptions {
	return domain.AllowlistOptions{Max: s.cfg.MaxAllowEntries, ConfirmEmpty: confirmEmpty}
}

func (s *Server) createService(c *call) error {
	var in apitype.ServiceCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	var plan *domain.RestorePlan
	if in.RestoreFrom != nil {
		// A restore hands out the admin password of a copy of another
		// service's data: a credential, so role admin.
		if err := c.requireAdmin(); err != nil {
			return err
		}
		var err error
		if plan, err = s.planRestore(c, &in); err != nil {
			return err
		}
	}
	if in.Nodes == 0 {
		in.Nodes = 1
	}
	return c.create(func(tx store.Tx) (any, error) {
		proj, err := getIn[domain.Project](c, tx, "project", c.project)
		if err != nil {
			return nil, err
		}
		others, err := store.List[domain.Service](c.ctx, tx, store.Query{ProjectID: c.project})
		if err != nil {
			return nil, err
		}
		svc, err := domain.NewService(s.cfg.Catalog, c.project, in.Name, in.Region, in.Nodes, allowIn(in.AllowedIPs), s.allowOpts(in.ConfirmEmpty), others)
		if err != nil {
			return nil, err
		}
		if err := domain.CheckServiceQuota(proj, s.cfg.Quotas, others, svc.NodeCount); err != nil {
			return nil, err
		}
		now := s.now()
		svc.ID, svc.CreatedAt, svc.UpdatedAt = domain.NewID(domain.PrefixService), now, now
		c.target = svc.ID
		pw := password.Generate()
		if svc.AdminVerifier, err = password.Verifier(pw); err != nil {
			return nil, err
		}
		if plan != nil {
			if err := s.startRestore(c, tx, svc, plan); err != nil {
				return nil, err
			}
		}
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return nil, err
		}
		slots, err := s.place(c, tx, svc)
		if err != nil {
			return nil, err
		}
		var nodes []*domain.Node
		for i, sl := range slots {
			n := domain.NewNode(svc, i, sl.AZ, now)
			n.Host = sl.Host
			if err := store.Put(c.ctx, tx, n); err != nil {
				return nil, err
			}
			nodes = append(nodes, n)
		}
		// Its nodes have no host until the reconciler places them.
		if _, err := desired.Bump(c.ctx, tx, desired.Affected{Services: []string{svc.ID}}); err != nil {
			return nil, err
		}
		out := s.serviceOut(c, svc, nodes)
		out.AdminPassword = pw
		return out, nil
	})
}

// place chooses the hosts of a new service's nodes (domain.Place over the
// registered hosts and their load); an impossible placement refuses the
// create with the reason (409 not_enough_azs or no_capacity).
func (s *Server) place(c *call, tx store.Tx, svc *domain.Service) ([]domain.Slot, error) {
	region, err := s.cfg.Catalog.Lookup("region", svc.Region)
	if err != nil {
		return nil, err
	}
	hosts, err := store.List[domain.Host](c.ctx, tx, store.Query{})
	if err != nil {
		return nil, err
	}
	all, err := store.List[domain.Node](c.ctx, tx, store.Query{})
	if err != nil {
		return nil, err
	}
	return domain.Place(domain.PlacementRequest{Region: region, Count: svc.NodeCount},
		domain.Fleet{Hosts: hosts, Load: domain.LoadOf(all), Now: s.now(), HeartbeatTimeout: s.cfg.Failover.HostTimeout})
}

func (s *Server) listServices(c *call) error {
	svcs, next, err := listIn[domain.Service](c, "")
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.Service]{Items: mapList(svcs, func(v *domain.Service) apitype.Service { return s.serviceOut(c, v, nil) }), NextPageToken: next})
}

func (s *Server) getService(c *call) error {
	var svc *domain.Service
	var nodes []*domain.Node
	if err := c.view(func(tx store.Tx) (err error) {
		if svc, err = getIn[domain.Service](c, tx, "service", c.r.PathValue("id")); err != nil {
			return err
		}
		nodes, err = store.List[domain.Node](c.ctx, tx, store.Query{ProjectID: c.project, Parent: svc.ID, IncludeDeleted: true})
		return err
	}); err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(svc.Revision))
	return c.reply(0, s.serviceOut(c, svc, nodes))
}

func (s *Server) deleteService(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var svc *domain.Service
	var nodes []*domain.Node
	err := c.mutate(func(tx store.Tx) (err error) {
		if svc, err = getIn[domain.Service](c, tx, "service", id); err != nil {
			return err
		}
		if err := c.checkIfMatch(svc.Revision); err != nil {
			return err
		}
		now := s.now()
		if started, err := svc.BeginDelete(now); err != nil || !started {
			return err
		}
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		if nodes, err = store.List[domain.Node](c.ctx, tx, store.Query{ProjectID: c.project, Parent: id}); err != nil {
			return err
		}
		for _, n := range nodes {
			if started, err := n.BeginDelete(now); err != nil {
				return err
			} else if !started {
				continue
			}
			if err := store.Put(c.ctx, tx, n); err != nil {
				return err
			}
		}
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{id}})
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, s.serviceOut(c, svc, nodes))
}

func (s *Server) getAllowlist(c *call) error {
	var svc *domain.Service
	var nodes []*domain.Node
	if err := c.view(func(tx store.Tx) (err error) {
		if svc, err = getIn[domain.Service](c, tx, "service", c.r.PathValue("id")); err != nil {
			return err
		}
		nodes, err = store.List[domain.Node](c.ctx, tx, store.Query{ProjectID: c.project, Parent: svc.ID})
		return err
	}); err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(svc.AllowlistRevision))
	out := allowlistOut(svc)
	out.Failed = c.allowlistFailures(svc, nodes)
	return c.reply(0, out)
}

func (s *Server) putAllowlist(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var in apitype.AllowlistUpdate
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.AllowedIPs == nil && !in.ConfirmEmpty {
		return domain.Invalidf(domain.CodeRequired, "allowed_ips", "send the full list; an empty list also needs confirm_empty=true", "allowed_ips is required")
	}
	entries, err := domain.NormalizeAllowlist(allowIn(in.AllowedIPs), s.allowOpts(in.ConfirmEmpty))
	if err != nil {
		return err
	}
	var svc *domain.Service
	err = c.mutate(func(tx store.Tx) (err error) {
		if svc, err = getIn[domain.Service](c, tx, "service", id); err != nil {
			return err
		}
		if err := c.checkIfMatch(svc.AllowlistRevision); err != nil {
			return err
		}
		if domain.Going(svc.State) {
			return domain.Conflictf(domain.CodeInvalidState, "", "the service is being deleted", "service %s is %s", id, svc.State)
		}
		before := svc.AllowedIPs
		svc.AllowedIPs = entries
		svc.AllowlistRevision++
		svc.UpdatedAt = s.now()
		c.detail = domain.DescribeAllowlistChange(svc.AllowlistRevision, before, entries, audit.MaxDetail/2-64)
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{id}})
		return err
	})
	if err != nil {
		return err
	}
	s.allowlistChanged(svc)
	c.w.Header().Set("ETag", etag(svc.AllowlistRevision))
	return c.reply(0, allowlistOut(svc))
}

// startOperation records an attach or detach of svc as a pending operation
// and marks the service migrating.
func (s *Server) startOperation(c *call, tx store.Tx, svc *domain.Service, typ, vpcID string) (*domain.Operation, error) {
	now := s.now()
	op := domain.NewOperation(c.project, typ, svc.ID, now)
	op.VPCID, op.FromVPCID = vpcID, svc.VPCID
	if err := svc.BeginMigration(op.ID, now); err != nil {
		return nil, err
	}
	if err := store.Put(c.ctx, tx, op); err != nil {
		return nil, err
	}
	if err := store.Put(c.ctx, tx, svc); err != nil {
		return nil, err
	}
	c.detail = "operation=" + op.ID
	_, err := desired.Bump(c.ctx, tx, desired.Affected{Services: []string{svc.ID}})
	return op, err
}

func (s *Server) attachService(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var in apitype.AttachRequest
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.VPCID == "" {
		return domain.Invalidf(domain.CodeRequired, "vpc_id", "give the ID of a VPC of this project in the service's region", "vpc_id is required")
	}
	return s.move(c, id, domain.OpServiceAttach, func(tx store.Tx, svc *domain.Service) (string, error) {
		vpc, err := getIn[domain.VPC](c, tx, "VPC", in.VPCID)
		if err != nil {
			return "", err
		}
		return vpc.ID, domain.CheckAttach(svc, vpc)
	})
}

func (s *Server) detachService(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	return s.move(c, id, domain.OpServiceDetach, func(_ store.Tx, svc *domain.Service) (string, error) {
		return "", domain.CheckDetach(svc)
	})
}

// move starts an attach or detach of service id: check validates it in the
// transaction and names the destination VPC ("" for the internet).
func (s *Server) move(c *call, id, typ string, check func(store.Tx, *domain.Service) (string, error)) error {
	var op *domain.Operation
	err := c.mutate(func(tx store.Tx) error {
		svc, err := getIn[domain.Service](c, tx, "service", id)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(svc.Revision); err != nil {
			return err
		}
		vpcID, err := check(tx, svc)
		if err != nil {
			return err
		}
		op, err = s.startOperation(c, tx, svc, typ, vpcID)
		return err
	})
	if err != nil {
		return err
	}
	c.w.Header().Set("Location", "/v1/projects/"+c.project+"/operations/"+op.ID)
	return c.reply(0, c.operationOut(op))
}

// ---- operations ----

func (s *Server) listOperations(c *call) error {
	ops, next, err := listIn[domain.Operation](c, c.r.URL.Query().Get("target_id"))
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.Operation]{Items: mapList(ops, c.operationOut), NextPageToken: next})
}

func (s *Server) getOperation(c *call) error {
	var op *domain.Operation
	if err := c.view(func(tx store.Tx) (err error) {
		op, err = getIn[domain.Operation](c, tx, "operation", c.r.PathValue("id"))
		return err
	}); err != nil {
		return err
	}
	return c.reply(0, c.operationOut(op))
}

// ---- audit ----

func (s *Server) listProjectAudit(c *call) error { return s.auditPage(c, c.project) }

func (s *Server) listAudit(c *call) error { return s.auditPage(c, c.r.URL.Query().Get("project_id")) }

func (s *Server) auditPage(c *call, project string) error {
	pg, err := c.page()
	if err != nil {
		return err
	}
	var es []domain.AuditEntry
	if err := c.view(func(tx store.Tx) (err error) {
		es, err = tx.ListAudit(c.ctx, store.AuditQuery{ProjectID: project, After: pg.after, Limit: pg.limit})
		return err
	}); err != nil {
		return err
	}
	out := apitype.List[apitype.AuditEntry]{Items: mapList(es, auditOut)}
	if len(es) > 0 {
		out.NextPageToken = pg.next(len(es), es[len(es)-1].Seq)
	}
	return c.reply(0, out)
}

func (s *Server) verifyAudit(c *call) error {
	opt := audit.Options{MaxUnsigned: s.cfg.AuditMaxUnsigned, Now: s.now()}
	var fileProblem string
	if s.cfg.AuditCheckpointFile != "" {
		f, err := os.Open(s.cfg.AuditCheckpointFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// Checked below: a store with checkpoints needs the file.
		case err != nil:
			return fmt.Errorf("open checkpoint file: %w", err)
		default:
			opt.External, err = audit.ReadCheckpointFile(f, s.cfg.AuditKey)
			f.Close()
			if err != nil {
				fileProblem = "checkpoint file " + filepath.Base(s.cfg.AuditCheckpointFile) + ": " + err.Error()
			}
		}
	}
	var rep audit.Report
	if err := c.view(func(tx store.Tx) (err error) {
		rep, err = audit.VerifyWith(c.ctx, tx, s.cfg.AuditKey, opt)
		return err
	}); err != nil {
		return err
	}
	if s.cfg.AuditCheckpointFile != "" && rep.Checkpoints > 0 && len(opt.External) == 0 && fileProblem == "" {
		fileProblem = "checkpoint file " + filepath.Base(s.cfg.AuditCheckpointFile) + " is missing or empty, but the database holds checkpoints"
	}
	out := apitype.AuditVerify{OK: rep.OK, Entries: rep.Entries, Checkpoints: rep.Checkpoints, FirstBad: rep.FirstBad, Problem: rep.Problem,
		LastSeq: rep.LastSeq, SignedThrough: rep.CheckedSeq, ExternalCheckpoints: int64(len(opt.External))}
	if fileProblem != "" && out.OK {
		out.OK, out.Problem = false, fileProblem
	}
	out.Message = "signed through entry " + strconv.FormatInt(rep.CheckedSeq, 10) + " of " + strconv.FormatInt(rep.LastSeq, 10)
	if !out.OK {
		out.Message = "audit log tampered: " + out.Problem + " (" + out.Message + ")"
	}
	return c.reply(0, out)
}

// failoverService starts a failover the tenant asks for: the primary is
// fenced and replaced by the replica with the most WAL (refused for a
// 1-node service, one under another operation, or one whose replicas
// might lack acknowledged commits).
func (s *Server) failoverService(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var op *domain.Operation
	err := c.mutate(func(tx store.Tx) error {
		svc, err := getIn[domain.Service](c, tx, "service", id)
		if err != nil {
			return err
		}
		nodes, err := store.List[domain.Node](c.ctx, tx, store.Query{Parent: id})
		if err != nil {
			return err
		}
		live, err := store.List[domain.Operation](c.ctx, tx, store.Query{ProjectID: svc.ProjectID, Parent: id, States: domain.LiveOperationStates})
		if err != nil {
			return err
		}
		members := domain.Members(svc, nodes, func(string) bool { return true })
		var started bool
		if op, started, err = domain.RequestFailover(svc, members, live, s.cfg.Failover, s.now()); err != nil || !started {
			return err
		}
		if err := store.Put(c.ctx, tx, op); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		c.detail = "operation=" + op.ID + " promote=" + op.Failover.Promote
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{svc.ID}})
		return err
	})
	if err != nil {
		return err
	}
	c.w.Header().Set("Location", "/v1/projects/"+c.project+"/operations/"+op.ID)
	return c.reply(0, c.operationOut(op))
}
