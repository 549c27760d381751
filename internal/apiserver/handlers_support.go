package apiserver

import (
	"errors"
	"slices"
	"strconv"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Support requests (design 0015): a tenant files one, the operator
// approves it (raising the quota through applyQuota, the path of PUT
// .../quota) or declines it with a reply. Each step is an audit entry of
// the request's project.

func (s *Server) createSupportRequest(c *call) error {
	var in apitype.SupportRequestCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	return c.create(func(tx store.Tx) (any, error) {
		p, err := getIn[domain.Project](c, tx, "project", c.project)
		if err != nil {
			return nil, err
		}
		open, err := store.List[domain.SupportRequest](c.ctx, tx, store.Query{ProjectID: c.project, States: []string{domain.StateOpen}})
		if err != nil {
			return nil, err
		}
		r, err := domain.NewSupportRequest(domain.SupportRequestInput{Type: in.Type, Resource: in.Resource, Requested: in.Requested,
			Message: in.Message, Requester: c.who.actor()}, p, s.cfg.Quotas, len(open), s.now())
		if err != nil {
			return nil, err
		}
		c.target = r.ID
		c.detail = supportDetail(r)
		if err := store.Put(c.ctx, tx, r); err != nil {
			return nil, err
		}
		return supportOut(r), nil
	})
}

// supportDetail summarises a request for its audit entries.
func supportDetail(r *domain.SupportRequest) string {
	return r.Type + " " + r.Resource + " " + strconv.Itoa(r.Current) + " -> " + strconv.Itoa(r.Requested)
}

func (s *Server) listSupportRequests(c *call) error {
	rs, next, err := listIn[domain.SupportRequest](c, "")
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.SupportRequest]{Items: mapList(rs, supportOut), NextPageToken: next})
}

func (s *Server) getSupportRequest(c *call) error {
	var r *domain.SupportRequest
	if err := c.view(func(tx store.Tx) (err error) {
		r, err = getIn[domain.SupportRequest](c, tx, "support request", c.r.PathValue("id"))
		return err
	}); err != nil {
		return err
	}
	return c.reply(0, supportOut(r))
}

// supportStates are the states ?state= may select.
var supportStates = []string{domain.StateOpen, domain.StateApproved, domain.StateDeclined}

// listAllSupportRequests lists every project's requests (operator);
// ?state=open selects the queue.
func (s *Server) listAllSupportRequests(c *call) error {
	pg, err := c.page()
	if err != nil {
		return err
	}
	q := store.Query{After: pg.after, Limit: pg.limit}
	if st := c.r.URL.Query().Get("state"); st != "" {
		if !slices.Contains(supportStates, st) {
			return domain.Invalidf(domain.CodeInvalidState, "state", "use open, approved or declined", "%q is not a state of a support request", truncate(st, 32))
		}
		q.States = []string{st}
	}
	var rs []*domain.SupportRequest
	if err := c.view(func(tx store.Tx) (err error) {
		rs, err = store.List[domain.SupportRequest](c.ctx, tx, q)
		return err
	}); err != nil {
		return err
	}
	next := ""
	if len(rs) > 0 {
		next = pg.next(len(rs), rs[len(rs)-1].Seq)
	}
	return c.reply(0, apitype.List[apitype.SupportRequest]{Items: mapList(rs, supportOut), NextPageToken: next})
}

func (s *Server) approveSupportRequest(c *call) error { return s.decideSupportRequest(c, true) }

func (s *Server) declineSupportRequest(c *call) error { return s.decideSupportRequest(c, false) }

// decideSupportRequest approves or declines request {id}. An approval
// raises the project's quota in the same transaction, through applyQuota,
// with its own project.quota.set audit entry.
func (s *Server) decideSupportRequest(c *call, approve bool) error {
	var in apitype.SupportDecision
	if err := c.decode(&in); err != nil {
		return err
	}
	id := c.r.PathValue("id")
	c.target = id
	var r *domain.SupportRequest
	err := c.mutate(func(tx store.Tx) (err error) {
		r, err = store.Get[domain.SupportRequest](c.ctx, tx, id)
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("support request", id)
		}
		if err != nil {
			return err
		}
		// The entries belong to the request's project: its tenant sees them.
		c.project = r.ProjectID
		c.detail = supportDetail(r)
		if !approve {
			if err := r.Decline(c.who.actor(), in.Reply, s.now()); err != nil {
				return err
			}
			return store.Put(c.ctx, tx, r)
		}
		p, err := store.Get[domain.Project](c.ctx, tx, r.ProjectID)
		if err != nil {
			return err
		}
		current, err := domain.QuotaOf(p, s.cfg.Quotas, r.Resource)
		if err != nil {
			return err
		}
		set, err := r.Approve(c.who.actor(), in.Reply, current, s.now())
		if err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, r); err != nil {
			return err
		}
		if set == 0 {
			c.detail += " (the quota is already " + strconv.Itoa(current) + ")"
			return nil
		}
		var up apitype.QuotaUpdate
		switch r.Resource {
		case domain.QuotaVPCs:
			up.VPCs = &set
		case domain.QuotaServices:
			up.Services = &set
		case domain.QuotaNodes:
			up.Nodes = &set
		}
		change, err := s.applyQuota(c, tx, p, up)
		if err != nil {
			return err
		}
		return c.appendAuditOf(tx, "project.quota.set", p.ID, change+" (support request "+r.ID+")", domain.OutcomeSuccess)
	})
	if err != nil {
		return err
	}
	return c.reply(0, supportOut(r))
}
