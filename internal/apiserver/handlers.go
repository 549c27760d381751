package apiserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// getIn reads an object of the call's project; another project's object
// answers exactly as a missing one.
func getIn[T any, P store.Ptr[T]](c *call, tx store.Tx, kind, id string) (P, error) {
	o, err := store.Get[T, P](c.ctx, tx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && o.Base().ProjectID != c.project) {
		return nil, errNotFound(kind, id)
	}
	return o, err
}

// listIn reads one page of the call's project's objects of type T.
func listIn[T any, P store.Ptr[T]](c *call, parent string) ([]P, string, error) {
	pg, err := c.page()
	if err != nil {
		return nil, "", err
	}
	var out []P
	err = c.view(func(tx store.Tx) error {
		out, err = store.List[T, P](c.ctx, tx, store.Query{ProjectID: c.project, Parent: parent, After: pg.after, Limit: pg.limit})
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > 0 {
		next = pg.next(len(out), out[len(out)-1].Base().Seq)
	}
	return out, next, nil
}

// mapList converts objects to wire items.
func mapList[P any, W any](in []P, f func(P) W) []W {
	out := make([]W, 0, len(in))
	for _, x := range in {
		out = append(out, f(x))
	}
	return out
}

// maxIdempotencyKey bounds an Idempotency-Key header.
const maxIdempotencyKey = 255

// DefaultIdempotencyTTL is how long an Idempotency-Key is remembered.
const DefaultIdempotencyTTL = 24 * time.Hour

// SecretShownOnce is what a replayed create says instead of the secret it
// handed out the first time.
const SecretShownOnce = "the secret was shown once, in the answer to the first request with this Idempotency-Key, and is not kept; create a new token or reset the password"

// withoutSecrets returns what a create's idempotency record keeps of its
// answer: the created object with every credential it carried removed and
// the secret_shown_once notice set. Records are stored unsealed and kept
// for a day; a secret never goes in one.
func withoutSecrets(v any) any {
	switch o := v.(type) {
	case apitype.Token:
		if o.Secret != "" {
			o.Secret, o.SecretShownOnce = "", SecretShownOnce
		}
		return o
	case apitype.HostCreated:
		o.AgentToken = withoutSecrets(o.AgentToken).(apitype.Token)
		return o
	case apitype.Service:
		if o.AdminPassword != "" {
			o.AdminPassword, o.SecretShownOnce = "", SecretShownOnce
		}
		return o
	}
	return v
}

// create runs a creating handler: fn builds and stores the object in tx
// and returns the wire value. With an Idempotency-Key, a repeat of the same
// request (the same SHA-256 of the body) answers with the object as first
// created, its secret replaced by a notice (withoutSecrets), and a
// different request with the same key is refused; the key, the object and
// the audit entry commit together. Keys expire after Config.IdempotencyTTL.
func (c *call) create(fn func(tx store.Tx) (any, error)) error {
	key := c.r.Header.Get("Idempotency-Key")
	if len(key) > maxIdempotencyKey || !isPrintableASCII(key) && key != "" {
		return &apiError{status: 400, code: "invalid_idempotency_key", field: "Idempotency-Key", msg: "the Idempotency-Key is not 1 to 255 printable ASCII characters", hint: "use a UUID"}
	}
	sum := sha256.Sum256(c.body)
	reqHash := hex.EncodeToString(sum[:])
	scoped := c.who.TokenID + " " + c.r.Method + " " + c.r.URL.Path + " " + key
	status := c.rt.Status
	var body []byte
	replayed := false
	now := c.s.now()
	err := c.s.cfg.Store.Update(c.ctx, func(tx store.Tx) error {
		if key != "" {
			rec, err := tx.GetIdempotency(c.ctx, scoped)
			expired := err == nil && now.Sub(time.Unix(rec.CreatedAt, 0)) >= c.s.cfg.IdempotencyTTL
			switch {
			case err == nil && expired:
				// Not yet purged: a new request; Put replaces it.
			case err == nil && rec.RequestHash != reqHash:
				return &apiError{status: http.StatusUnprocessableEntity, code: "idempotency_key_reused", field: "Idempotency-Key",
					msg: "this Idempotency-Key was used for a different request", hint: "use a new key for a new request"}
			case err == nil:
				status, body, replayed = rec.Status, rec.Body, true
				return nil
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
		}
		v, err := fn(tx)
		if err != nil {
			return err
		}
		if body, err = json.Marshal(v); err != nil {
			return err
		}
		if key != "" {
			kept, err := json.Marshal(withoutSecrets(v))
			if err != nil {
				return err
			}
			if err := tx.PutIdempotency(c.ctx, store.Idempotency{Key: scoped, RequestHash: reqHash, Status: status, Body: kept, CreatedAt: now.Unix()}); err != nil {
				return err
			}
		}
		return c.appendAudit(tx, domain.OutcomeSuccess)
	})
	if err != nil {
		return err
	}
	c.audited = true
	if replayed {
		c.w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(c.w, status, bytes.TrimSpace(body))
	return nil
}

// PurgeIdempotency deletes the idempotency records older than
// Config.IdempotencyTTL; the control plane calls it from its loop.
func (s *Server) PurgeIdempotency(ctx context.Context) (int64, error) {
	var n int64
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) (err error) {
		n, err = tx.DeleteIdempotencyBefore(ctx, s.now().Add(-s.cfg.IdempotencyTTL).Unix())
		return err
	})
	return n, err
}

func (s *Server) health(c *call) error {
	rev, err := s.cfg.Store.Revision(c.ctx)
	if err != nil {
		return err
	}
	return c.reply(0, apitype.Health{Status: "ok", Revision: rev})
}

// whoami answers with the caller's own identity, so a client (the
// console) can show only the controls the role may use.
func (s *Server) whoami(c *call) error {
	return c.reply(0, apitype.Identity{TokenID: c.who.TokenID, Role: string(c.who.Role), ProjectID: c.who.ProjectID, Name: c.who.Name})
}

func (s *Server) listRegions(c *call) error {
	out := apitype.List[apitype.Region]{}
	for _, r := range s.cfg.Catalog.Regions {
		out.Items = append(out.Items, apitype.Region{Code: r.Code, AZs: slices.Clone(r.AZs)})
	}
	return c.reply(0, out)
}

// ---- projects ----

func (s *Server) createProject(c *call) error {
	var in apitype.ProjectCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	if err := domain.ValidateName("name", in.Name); err != nil {
		return err
	}
	return c.create(func(tx store.Tx) (any, error) {
		all, err := store.List[domain.Project](c.ctx, tx, store.Query{})
		if err != nil {
			return nil, err
		}
		for _, p := range all {
			if p.Name == in.Name {
				return nil, domain.Conflictf(domain.CodeDuplicateEntry, "name", "choose another name", "a project named %q exists (%s)", in.Name, p.ID)
			}
		}
		now := s.now()
		p := domain.NewProject(in.Name, now)
		c.target, c.project = p.ID, p.ID
		if err := s.newProjectCA(p); err != nil {
			return nil, err
		}
		if err := store.Put(c.ctx, tx, p); err != nil {
			return nil, err
		}
		return s.projectOut(p), nil
	})
}

func (s *Server) listProjects(c *call) error {
	pg, err := c.page()
	if err != nil {
		return err
	}
	var ps []*domain.Project
	err = c.view(func(tx store.Tx) error {
		q := store.Query{After: pg.after, Limit: pg.limit}
		if c.who.Role != domain.RoleOperator {
			q.ProjectID = c.who.ProjectID
		}
		ps, err = store.List[domain.Project](c.ctx, tx, q)
		return err
	})
	if err != nil {
		return err
	}
	out := apitype.List[apitype.Project]{Items: mapList(ps, s.projectOut)}
	if len(ps) > 0 {
		out.NextPageToken = pg.next(len(ps), ps[len(ps)-1].Seq)
	}
	return c.reply(0, out)
}

func (s *Server) getProject(c *call) error {
	var p *domain.Project
	if err := c.view(func(tx store.Tx) (err error) {
		p, err = getIn[domain.Project](c, tx, "project", c.project)
		return err
	}); err != nil {
		return err
	}
	c.w.Header().Set("ETag", etag(p.Revision))
	return c.reply(0, s.projectOut(p))
}

func (s *Server) setQuota(c *call) error {
	var in apitype.QuotaUpdate
	if err := c.decode(&in); err != nil {
		return err
	}
	if err := validateQuotaUpdate(in); err != nil {
		return err
	}
	c.target = c.project
	var p *domain.Project
	err := c.mutate(func(tx store.Tx) (err error) {
		if p, err = getIn[domain.Project](c, tx, "project", c.project); err != nil {
			return err
		}
		c.detail, err = s.applyQuota(c, tx, p, in)
		return err
	})
	if err != nil {
		return err
	}
	return c.reply(0, s.projectOut(p))
}

// validateQuotaUpdate checks an operator's new quotas.
func validateQuotaUpdate(in apitype.QuotaUpdate) error {
	if in.VPCs == nil && in.Services == nil && in.Nodes == nil {
		return domain.Invalidf(domain.CodeRequired, "vpcs", `give one or more new quotas, e.g. {"vpcs": 5, "services": 20, "nodes": 60}`, "vpcs, services or nodes is required")
	}
	if in.VPCs != nil {
		if err := domain.ValidateQuota(*in.VPCs); err != nil {
			return err
		}
	}
	for field, v := range map[string]*int{"services": in.Services, "nodes": in.Nodes} {
		if v != nil {
			if err := domain.ValidateQuotaOf(field, *v); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyQuota sets project p's quotas to in (validated) and stores it in
// tx: the one path of an operator's quota change (PUT .../quota) and of an
// approved quota increase. It returns the change for the audit entry
// ("vpcs 3 -> 5").
func (s *Server) applyQuota(c *call, tx store.Tx, p *domain.Project, in apitype.QuotaUpdate) (string, error) {
	before := p.Limits(s.cfg.Quotas)
	var changes []string
	if in.VPCs != nil {
		changes = append(changes, fmt.Sprintf("vpcs %d -> %d", p.VPCQuota, *in.VPCs))
		p.VPCQuota = *in.VPCs
	}
	if in.Services != nil {
		changes = append(changes, fmt.Sprintf("services %d -> %d", before.Services, *in.Services))
		p.ServiceQuota = in.Services
	}
	if in.Nodes != nil {
		changes = append(changes, fmt.Sprintf("nodes %d -> %d", before.Nodes, *in.Nodes))
		p.NodeQuota = in.Nodes
	}
	p.UpdatedAt = s.now()
	return strings.Join(changes, ", "), store.Put(c.ctx, tx, p)
}

// ---- tokens ----

func (s *Server) createToken(c *call) error {
	var in apitype.TokenCreate
	if err := c.decode(&in); err != nil {
		return err
	}
	role, err := domain.ParseRole(in.Role)
	if err != nil {
		return err
	}
	if in.Name != "" {
		if err := domain.ValidateName("name", in.Name); err != nil {
			return err
		}
	}
	return c.create(func(tx store.Tx) (any, error) {
		if _, err := getIn[domain.Project](c, tx, "project", c.project); err != nil {
			return nil, err
		}
		secret := NewSecret()
		now := s.now()
		t := domain.NewToken(c.project, in.Name, role, HashSecret(secret), "", now)
		c.target = t.ID
		c.detail = "role=" + string(role)
		if err := store.Put(c.ctx, tx, t); err != nil {
			return nil, err
		}
		out := tokenOut(t)
		out.Secret = FormatToken(t.ID, secret)
		return out, nil
	})
}

func (s *Server) listTokens(c *call) error {
	ts, next, err := listIn[domain.Token](c, "")
	if err != nil {
		return err
	}
	return c.reply(0, apitype.List[apitype.Token]{Items: mapList(ts, tokenOut), NextPageToken: next})
}

func (s *Server) deleteToken(c *call) error {
	id := c.r.PathValue("id")
	c.target = id
	var t *domain.Token
	err := c.mutate(func(tx store.Tx) (err error) {
		if t, err = getIn[domain.Token](c, tx, "token", id); err != nil {
			return err
		}
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
