package apiserver

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// updateService changes a service (PATCH): its PostgreSQL settings
// ({"settings": {...}}, domain.ChangeSettings: reload-only ones in force
// at once, those that need a restart pending until an upgrade), its
// node count ({"nodes": N}: a service.resize roll-forward,
// domain.PlanResize), or both. With nodes the answer is the operation
// (202), otherwise the service (200). Refused with 409 during another
// operation, with a lost node, or when the region cannot place the new
// nodes.
func (s *Server) updateService(c *call) error {
	var in apitype.ServiceUpdate
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.Nodes == nil && in.Settings == nil {
		return domain.Invalidf(domain.CodeRequired, "nodes", `give the service's new node count (1, 2 or 3), its settings ({"settings": {"statement_timeout": "30s"}}), or both`, "nodes or settings is required")
	}
	var change domain.SettingsChange
	if in.Settings != nil {
		change = domain.SettingsChange{}
		for k, v := range in.Settings {
			change[k] = (*string)(v)
		}
	}
	if in.Nodes == nil {
		return s.changeSettings(c, change)
	}
	if err := domain.ValidateNodeCount(*in.Nodes); err != nil {
		return err
	}
	return s.roll(c, func(tx store.Tx, svc *domain.Service, members []domain.Member, r domain.Region, f domain.Fleet) (*domain.RollPlan, error) {
		if change != nil {
			res, err := svc.ChangeSettings(change, knownZone, s.now())
			if err != nil {
				return nil, err
			}
			c.detail = settingsDetail(res) + " "
		}
		if *in.Nodes > svc.NodeCount {
			proj, err := getIn[domain.Project](c, tx, "project", c.project)
			if err != nil {
				return nil, err
			}
			others, err := store.List[domain.Service](c.ctx, tx, store.Query{ProjectID: c.project})
			if err != nil {
				return nil, err
			}
			others = slicesDelete(others, svc.ID)
			if err := domain.CheckServiceQuota(proj, s.cfg.Quotas, others, *in.Nodes); err != nil {
				return nil, err
			}
		}
		return domain.PlanResize(svc, members, *in.Nodes, r, f)
	})
}

// changeSettings stores a change of the settings of the service named in
// the path and wakes its nodes' hosts: they write and reload those a
// reload applies; the others wait for an upgrade. The answer is the
// service, with what is pending.
func (s *Server) changeSettings(c *call, change domain.SettingsChange) error {
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
		res, err := svc.ChangeSettings(change, knownZone, s.now())
		if err != nil {
			return err
		}
		c.detail = settingsDetail(res)
		if svc.SettingsRevision, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{svc.ID}}); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		nodes, err = store.List[domain.Node](c.ctx, tx, store.Query{ProjectID: c.project, Parent: svc.ID, IncludeDeleted: true})
		return err
	})
	if err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(svc.Revision))
	return c.reply(http.StatusOK, s.serviceOut(c, svc, nodes))
}

// settingsDetail is the audit detail of a settings change.
func settingsDetail(r domain.SettingsResult) string {
	return "settings reloaded=" + strings.Join(r.Reload, ",") + " pending_restart=" + strings.Join(r.Restart, ",")
}

// knownZone reports whether the time zone database knows zone (a node's
// PostgreSQL would not start with a zone it does not know). "Local" is
// Go's name for the machine's zone, not a zone.
func knownZone(zone string) bool {
	_, err := time.LoadLocation(zone)
	return err == nil && zone != "Local"
}

// upgradeService moves a service to fresh nodes (domain.PlanUpgrade).
func (s *Server) upgradeService(c *call) error {
	return s.roll(c, func(_ store.Tx, svc *domain.Service, members []domain.Member, r domain.Region, f domain.Fleet) (*domain.RollPlan, error) {
		return domain.PlanUpgrade(svc, members, r, f)
	})
}

// roll plans a roll-forward of the service named in the path with plan
// (over its members, its region and the fleet as they are now) and
// starts it: the operation is stored and answered (202), the reconciler
// drives it.
func (s *Server) roll(c *call, plan func(store.Tx, *domain.Service, []domain.Member, domain.Region, domain.Fleet) (*domain.RollPlan, error)) error {
	id := c.r.PathValue("id")
	c.target = id
	var op *domain.Operation
	err := c.mutate(func(tx store.Tx) error {
		c.detail = ""
		svc, err := getIn[domain.Service](c, tx, "service", id)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(svc.Revision); err != nil {
			return err
		}
		region, err := s.cfg.Catalog.Lookup("region", svc.Region)
		if err != nil {
			return err
		}
		hosts, err := store.List[domain.Host](c.ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		all, err := store.List[domain.Node](c.ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		now := s.now()
		byName := map[string]*domain.Host{}
		for _, h := range hosts {
			byName[h.Name] = h
		}
		members := domain.Members(svc, all, func(host string) bool {
			h := byName[host]
			return h == nil || domain.HostHealthy(h, now, s.cfg.Failover.HostTimeout)
		})
		p, err := plan(tx, svc, members, region, domain.Fleet{Hosts: hosts, Load: domain.LoadOf(all), Now: now, HeartbeatTimeout: s.cfg.Failover.HostTimeout})
		if err != nil {
			return err
		}
		if op, err = domain.StartRoll(svc, members, p, now); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, op); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, svc); err != nil {
			return err
		}
		c.detail += "operation=" + op.ID + " nodes=" + strconv.Itoa(p.Target)
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Services: []string{svc.ID}})
		return err
	})
	if err != nil {
		return err
	}
	c.w.Header().Set("Location", "/v1/projects/"+c.project+"/operations/"+op.ID)
	return c.reply(http.StatusAccepted, c.operationOut(op))
}

// slicesDelete returns svcs without the service id.
func slicesDelete(svcs []*domain.Service, id string) []*domain.Service {
	out := svcs[:0:0]
	for _, v := range svcs {
		if v.ID != id {
			out = append(out, v)
		}
	}
	return out
}
