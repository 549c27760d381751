package apiserver

import (
	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// Platform tokens — operator tokens and host agents' tokens — belong to no
// project; only operators create, list and revoke them. An agent token is
// always bound to one host (it reads that host's desired state, which
// holds its nodes' keys): there is no token for every host.

func (s *Server) createOperatorToken(c *call) error {
	var in apitype.PlatformTokenCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.Name == "" {
		return domain.Invalidf(domain.CodeRequired, "name", `name the token after who holds it, e.g. {"name": "alice"}`, "name is required")
	}
	if err := domain.ValidateName("name", in.Name); err != nil {
		return err
	}
	return c.createPlatformToken(domain.RoleOperator, in.Name, "")
}

func (s *Server) createAgentToken(c *call) error {
	host := c.r.PathValue("host")
	if err := domain.ValidateName("host", host); err != nil {
		return err
	}
	var in apitype.PlatformTokenCreate
	if c.r.ContentLength != 0 {
		if err := c.decode(&in); err != nil {
			return err
		}
	}
	if in.Name == "" {
		in.Name = "agent-" + host
	}
	if err := domain.ValidateName("name", in.Name); err != nil {
		return err
	}
	return c.createPlatformToken(domain.RoleAgent, in.Name, host)
}

// createPlatformToken stores a new token of no project; the answer holds
// its secret, once.
func (c *call) createPlatformToken(role domain.Role, name, host string) error {
	return c.create(func(tx store.Tx) (any, error) {
		secret := NewSecret()
		t := domain.NewToken("", name, role, HashSecret(secret), host, c.s.now())
		c.target = t.ID
		c.detail = "role=" + string(role) + " name=" + name
		if host != "" {
			c.detail += " host=" + host
		}
		if err := store.Put(c.ctx, tx, t); err != nil {
			return nil, err
		}
		out := tokenOut(t)
		out.Secret = FormatToken(t.ID, secret)
		return out, nil
	})
}

// listPlatformTokens lists the live operator and agent tokens (?host=
// filters agent tokens by host).
func (s *Server) listPlatformTokens(c *call) error {
	pg, err := c.page()
	if err != nil {
		return err
	}
	host := c.r.URL.Query().Get("host")
	var ts []*domain.Token
	err = c.view(func(tx store.Tx) error {
		ts, err = store.List[domain.Token](c.ctx, tx, store.Query{After: pg.after, Limit: pg.limit})
		return err
	})
	if err != nil {
		return err
	}
	out := apitype.List[apitype.Token]{Items: []apitype.Token{}}
	for _, t := range ts {
		if t.ProjectID == "" && (host == "" || t.Host == host) {
			out.Items = append(out.Items, tokenOut(t))
		}
	}
	if len(ts) > 0 {
		out.NextPageToken = pg.next(len(ts), ts[len(ts)-1].Seq)
	}
	return c.reply(0, out)
}

// deletePlatformToken revokes an operator or agent token.
func (s *Server) deletePlatformToken(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var t *domain.Token
	err := c.mutate(func(tx store.Tx) (err error) {
		t, err = store.Get[domain.Token](c.ctx, tx, id)
		if err != nil || t.ProjectID != "" {
			return errNotFound("platform token", id)
		}
		c.detail = "role=" + string(t.Role) + " name=" + t.Name
		if domain.Gone(t.State) {
			return nil
		}
		if err := t.Revoke(s.now()); err != nil {
			return err
		}
		return store.Put(c.ctx, tx, t)
	})
	if err != nil {
		return err
	}
	return c.reply(0, tokenOut(t))
}
