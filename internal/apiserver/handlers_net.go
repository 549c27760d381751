package apiserver

import (
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/desired"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// checkIfMatch refuses a write whose If-Match names another revision.
func (c *call) checkIfMatch(current int64) error {
	want, err := c.ifMatch()
	if err != nil {
		return err
	}
	if want != 0 && want != current {
		return errStale(current)
	}
	return nil
}

// ---- VPCs ----

func (s *Server) createVPC(c *call) error {
	var in apitype.VPCCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	return c.create(func(tx store.Tx) (any, error) {
		p, err := getIn[domain.Project](c, tx, "project", c.project)
		if err != nil {
			return nil, err
		}
		others, err := store.List[domain.VPC](c.ctx, tx, store.Query{ProjectID: c.project})
		if err != nil {
			return nil, err
		}
		v, err := domain.NewVPC(s.cfg.Catalog, p, in.Name, in.Region, in.CIDR, others)
		if err != nil {
			return nil, err
		}
		now := s.now()
		v.ID, v.CreatedAt, v.UpdatedAt = domain.NewID(domain.PrefixVPC), now, now
		c.target = v.ID
		if err := store.Put(c.ctx, tx, v); err != nil {
			return nil, err
		}
		// A new VPC has no services: only the reconciler follows it.
		if _, err := tx.BumpHosts(c.ctx); err != nil {
			return nil, err
		}
		return vpcOut(v), nil
	})
}

func (s *Server) listVPCs(c *call) error {
	vs, next, err := listIn[domain.VPC](c, "")
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.VPC]{Items: mapList(vs, vpcOut), NextPageToken: next})
}

func (s *Server) getVPC(c *call) error {
	var v *domain.VPC
	if err := c.view(func(tx store.Tx) (err error) {
		v, err = getIn[domain.VPC](c, tx, "VPC", c.r.PathValue("id"))
		return err
	}); err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(v.Revision))
	return c.reply(0, vpcOut(v))
}

func (s *Server) deleteVPC(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var v *domain.VPC
	err := c.mutate(func(tx store.Tx) (err error) {
		if v, err = getIn[domain.VPC](c, tx, "VPC", id); err != nil {
			return err
		}
		if err := c.checkIfMatch(v.Revision); err != nil {
			return err
		}
		if domain.Going(v.State) {
			return nil
		}
		svcs, err := store.List[domain.Service](c.ctx, tx, store.Query{ProjectID: c.project, Parent: id})
		if err != nil {
			return err
		}
		pcxs, err := store.List[domain.Peering](c.ctx, tx, store.Query{ProjectID: c.project, Parent: id})
		if err != nil {
			return err
		}
		// A service being attached to this VPC holds it through its
		// operation before its VPCID changes.
		ops, err := store.List[domain.Operation](c.ctx, tx, store.Query{ProjectID: c.project})
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.VPCID == id && !domain.OperationMachine.Terminal(o.State) {
				return domain.Conflictf(domain.CodeInUse, "", "wait for operation "+o.ID+" to finish", "VPC %s is the destination of operation %s", id, o.ID)
			}
		}
		if err := domain.CheckVPCDelete(v, svcs, pcxs); err != nil {
			return err
		}
		if _, err := v.BeginDelete(s.now()); err != nil {
			return err
		}
		if err := store.Put(c.ctx, tx, v); err != nil {
			return err
		}
		_, err = desired.Bump(c.ctx, tx, desired.Affected{VPCs: []string{v.ID}})
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, vpcOut(v))
}

// ---- peerings ----

func (s *Server) createPeering(c *call) error {
	var in apitype.PeeringCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.VPCID == "" {
		return domain.Invalidf(domain.CodeRequired, "vpc_id", "give the ID of one of the project's VPCs (moat vpc list)", "vpc_id is required")
	}
	return c.create(func(tx store.Tx) (any, error) {
		v, err := getIn[domain.VPC](c, tx, "VPC", in.VPCID)
		if err != nil {
			return nil, err
		}
		others, err := store.List[domain.Peering](c.ctx, tx, store.Query{ProjectID: c.project, Parent: v.ID})
		if err != nil {
			return nil, err
		}
		p, err := domain.NewPeering(v, domain.PeeringRequest{PeerAccountID: in.PeerAccountID, PeerVPCID: in.PeerVPCID,
			PeerRegion: in.PeerRegion, PeerCIDRs: in.PeerCIDRs}, others, s.cfg.MaxPeeringsPerVPC)
		if err != nil {
			return nil, err
		}
		now := s.now()
		p.ID, p.CreatedAt, p.UpdatedAt, p.ExpiresAt = domain.NewID(domain.PrefixPeering), now, now, now.Add(domain.PeeringAcceptWindow)
		c.target = p.ID
		if err := store.Put(c.ctx, tx, p); err != nil {
			return nil, err
		}
		if _, err := desired.Bump(c.ctx, tx, desired.Affected{VPCs: []string{v.ID}}); err != nil {
			return nil, err
		}
		return peeringOut(p), nil
	})
}

func (s *Server) listPeerings(c *call) error {
	ps, next, err := listIn[domain.Peering](c, c.r.URL.Query().Get("vpc_id"))
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.Peering]{Items: mapList(ps, peeringOut), NextPageToken: next})
}

func (s *Server) getPeering(c *call) error {
	var p *domain.Peering
	if err := c.view(func(tx store.Tx) (err error) {
		p, err = getIn[domain.Peering](c, tx, "peering", c.r.PathValue("id"))
		return err
	}); err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(p.Revision))
	return c.reply(0, peeringOut(p))
}

func (s *Server) deletePeering(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var p *domain.Peering
	err := c.mutate(func(tx store.Tx) (err error) {
		if p, err = getIn[domain.Peering](c, tx, "peering", id); err != nil {
			return err
		}
		if err := c.checkIfMatch(p.Revision); err != nil {
			return err
		}
		if started, err := p.BeginDelete(s.now()); err != nil || !started {
			return err
		}
		if err := store.Put(c.ctx, tx, p); err != nil {
			return err
		}
		_, err = desired.Bump(c.ctx, tx, desired.Affected{VPCs: []string{p.VPCID}})
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, peeringOut(p))
}
