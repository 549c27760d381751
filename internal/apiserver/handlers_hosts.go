package apiserver

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Hosts (operator only): the machines whose agents run nodes. A host is
// named in paths by its name (the name its agent tokens are bound to) or
// its ID. The rules are domain.Host's; these handlers read, call them,
// store and convert.

func (s *Server) createHost(c *call) error {
	var in apitype.HostCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	return c.create(func(tx store.Tx) (any, error) {
		others, err := store.List[domain.Host](c.ctx, tx, store.Query{})
		if err != nil {
			return nil, err
		}
		now := s.now()
		h, err := domain.NewHost(s.cfg.Catalog, in.Name, in.Region, in.AZ, in.Capacity, others, now)
		if err != nil {
			return nil, err
		}
		if err := store.Put(c.ctx, tx, h); err != nil {
			return nil, err
		}
		secret := NewSecret()
		t := domain.NewToken("", "agent-"+h.Name, domain.RoleAgent, HashSecret(secret), h.Name, now)
		if err := store.Put(c.ctx, tx, t); err != nil {
			return nil, err
		}
		c.target = h.ID
		c.detail = "name=" + h.Name + " region=" + h.Region + " az=" + h.AZ + " capacity=" + strconv.Itoa(h.Capacity) + " token=" + t.ID
		out := apitype.HostCreated{Host: hostOut(c, h, nil, nil), AgentToken: tokenOut(t)}
		out.AgentToken.Secret = FormatToken(t.ID, secret)
		return out, nil
	})
}

func (s *Server) listHosts(c *call) error {
	var hosts []*domain.Host
	var nodes []*domain.Node
	err := c.view(func(tx store.Tx) (err error) {
		if hosts, err = store.List[domain.Host](c.ctx, tx, store.Query{}); err != nil {
			return err
		}
		nodes, err = store.List[domain.Node](c.ctx, tx, store.Query{})
		return err
	})
	if err != nil {
		return err
	}
	out := apitype.List[apitype.Host]{Items: []apitype.Host{}}
	for _, h := range hosts {
		out.Items = append(out.Items, hostOut(c, h, nodes, nil))
	}
	return c.reply(0, out)
}

func (s *Server) getHost(c *call) error {
	var h *domain.Host
	var nodes []*domain.Node
	var svcs []*domain.Service
	err := c.view(func(tx store.Tx) (err error) {
		if h, err = findHost(c, tx); err != nil {
			return err
		}
		nodes, svcs, err = nodesAndServices(c, tx)
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, hostOut(c, h, nodes, svcs))
}

func (s *Server) updateHost(c *call) error {
	var in apitype.HostUpdate
	if err := c.decode(&in); err != nil {
		return err
	}
	return s.changeHost(c, func(h *domain.Host) error { return h.SetCapacity(in.Capacity, s.now()) })
}

func (s *Server) drainHost(c *call) error {
	return s.changeHost(c, func(h *domain.Host) error { return h.Drain(s.now()) })
}

func (s *Server) activateHost(c *call) error {
	return s.changeHost(c, func(h *domain.Host) error { return h.Activate(s.now()) })
}

// changeHost applies fn to the path's host and stores it.
func (s *Server) changeHost(c *call, fn func(*domain.Host) error) error {
	var h *domain.Host
	var nodes []*domain.Node
	var svcs []*domain.Service
	err := c.mutate(func(tx store.Tx) (err error) {
		if h, err = findHost(c, tx); err != nil {
			return err
		}
		c.target = h.ID
		if err := fn(h); err != nil {
			return err
		}
		c.detail = "name=" + h.Name + " state=" + h.State + " capacity=" + strconv.Itoa(h.Capacity)
		if err := store.Put(c.ctx, tx, h); err != nil {
			return err
		}
		nodes, svcs, err = nodesAndServices(c, tx)
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, hostOut(c, h, nodes, svcs))
}

// deleteHost removes an empty host and revokes its agent tokens; a down
// host's abandoned nodes (deleting, replaced) are marked deleted.
func (s *Server) deleteHost(c *call) error {
	var h *domain.Host
	err := c.mutate(func(tx store.Tx) (err error) {
		if h, err = findHost(c, tx); err != nil {
			return err
		}
		c.target = h.ID
		nodes, err := store.List[domain.Node](c.ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		now := s.now()
		if err := h.Remove(nodes, now); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, h); err != nil {
			return err
		}
		c.detail = "name=" + h.Name
		for _, n := range h.AbandonedNodes(nodes) {
			if err := n.MarkDeleted(now); err != nil {
				return err
			}
			if err := store.Put(c.ctx, tx, n); err != nil {
				return err
			}
			c.detail += " abandoned=" + n.ID
		}
		toks, err := store.List[domain.Token](c.ctx, tx, store.Query{})
		if err != nil {
			return err
		}
		for _, t := range toks {
			if t.ProjectID != "" || t.Host != h.Name || domain.Gone(t.State) {
				continue
			}
			if err := t.Revoke(now); err != nil {
				return err
			}
			if err := store.Put(c.ctx, tx, t); err != nil {
				return err
			}
			c.detail += " revoked=" + t.ID
		}
		_, err = desired.Bump(c.ctx, tx, desired.Affected{Hosts: []string{h.Name}})
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, hostOut(c, h, nil, nil))
}

// findHost reads the live host the path names ({host}: its name or ID).
func findHost(c *call, tx store.Tx) (*domain.Host, error) {
	key := c.r.PathValue("host")
	if domain.ValidID(domain.PrefixHost, key) {
		h, err := store.Get[domain.Host](c.ctx, tx, key)
		if errors.Is(err, store.ErrNotFound) || (err == nil && domain.Gone(h.State)) {
			return nil, errHostNotFound(key)
		}
		return h, err
	}
	h, err := hostByName(c, tx, key)
	if err == nil && h == nil {
		return nil, errHostNotFound(key)
	}
	return h, err
}

// hostByName returns the live host named name, or nil.
func hostByName(c *call, tx store.Tx, name string) (*domain.Host, error) {
	hosts, err := store.List[domain.Host](c.ctx, tx, store.Query{})
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if h.Name == name && !domain.Gone(h.State) {
			return h, nil
		}
	}
	return nil, nil
}

func errHostNotFound(key string) error {
	return &apiError{status: http.StatusNotFound, code: domain.CodeNotFound, field: "host",
		msg: "host " + key + " was not found", hint: "list the hosts with moat host list; register one with moat host add"}
}

// errHostNotRegistered refuses an agent's report for a host no operator
// registered.
func errHostNotRegistered(name string) error {
	return &apiError{status: http.StatusConflict, code: "host_not_registered", field: "host",
		msg: "host " + name + " is not registered", hint: "an operator registers it first: moat host add " + name + " --region R --az AZ"}
}

// nodesAndServices reads every node and service, for a host's node list.
func nodesAndServices(c *call, tx store.Tx) ([]*domain.Node, []*domain.Service, error) {
	nodes, err := store.List[domain.Node](c.ctx, tx, store.Query{})
	if err != nil {
		return nil, nil, err
	}
	svcs, err := store.List[domain.Service](c.ctx, tx, store.Query{})
	return nodes, svcs, err
}

// hostOut converts h (nodes is every node the caller read; nil leaves the
// load at 0); with svcs it lists its live nodes, their roles in their
// services and their volumes.
func hostOut(c *call, h *domain.Host, nodes []*domain.Node, svcs []*domain.Service) apitype.Host {
	on := h.OnHost(nodes)
	out := apitype.Host{ID: h.ID, Name: h.Name, Region: h.Region, AZ: h.AZ, Capacity: h.Capacity, State: h.State,
		StateInfo: c.infoFor(h.StateInfo), Cordoned: h.Cordoned, LastHeartbeatAt: h.LastHeartbeatAt, AgentVersion: h.AgentVersion,
		Load: len(on), CreatedAt: h.CreatedAt}
	if svcs == nil {
		return out
	}
	byID := make(map[string]*domain.Service, len(svcs))
	for _, v := range svcs {
		byID[v.ID] = v
	}
	out.Nodes = []apitype.HostNode{}
	for _, n := range on {
		hn := apitype.HostNode{ID: n.ID, ProjectID: n.ProjectID, ServiceID: n.ServiceID, Role: apitype.RoleReplica, State: n.State, Volume: volumeOut(n)}
		if svc := byID[n.ServiceID]; svc != nil {
			hn.Role = nodeRole(svc, n)
		}
		out.Nodes = append(out.Nodes, hn)
	}
	return out
}
