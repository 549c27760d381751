package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/moatdb/moat/internal/audit"
	"github.com/moatdb/moat/internal/domain"
	"github.com/moatdb/moat/internal/store"
)

// DefaultRefusalInterval is how long refusals from one source are counted
// before their aggregate entry is written.
const DefaultRefusalInterval = time.Minute

// maxRefusalSources bounds the sources counted at once; refusals from more
// sources in one interval are counted under "other".
const maxRefusalSources = 4096

// refusalKey groups refusals: one source, one caller, one kind of answer.
type refusalKey struct {
	source, actor, code string
}

type refusalCount struct {
	first time.Time
	count int
	last  string // the last request's method and path
}

// refusals aggregates refused requests that anyone can make in bulk —
// unauthenticated ones, and refused reads (bad tokens, another project's
// paths) — so they cannot flood the audit log: the first refusal of a
// (source, actor, code) in an interval is written at once, the rest are
// counted and written as one entry with the count when the interval ends
// (Server.FlushRefusals, or the next refusal after it).
type refusals struct {
	mu       sync.Mutex
	interval time.Duration
	open     map[refusalKey]*refusalCount
	// limit is how many unauthenticated refusals a source may cause in an
	// interval before its requests are answered 429 until the interval
	// ends; bySource counts them.
	limit    int
	bySource map[string]*sourceWindow
}

// sourceWindow counts one source's unauthenticated refusals since start.
type sourceWindow struct {
	start time.Time
	n     int
}

// DefaultRefusalLimit is how many unauthenticated refusals a source may
// cause per RefusalInterval before it is answered 429.
const DefaultRefusalLimit = 300

// limited reports whether source is over its limit at now, and until when.
func (r *refusals) limited(source string, now time.Time) (bool, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.bySource[source]
	if w == nil || now.Sub(w.start) >= r.interval {
		return false, time.Time{}
	}
	return w.n >= r.limit, w.start.Add(r.interval)
}

// countUnauthenticated counts an unauthenticated refusal of source.
func (r *refusals) countUnauthenticated(source string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bySource == nil {
		r.bySource = map[string]*sourceWindow{}
	}
	w := r.bySource[source]
	if w == nil || now.Sub(w.start) >= r.interval {
		if w == nil && len(r.bySource) >= maxRefusalSources {
			r.expire(now)
			if len(r.bySource) >= maxRefusalSources {
				return // too many sources to track: no limit for this one
			}
		}
		w = &sourceWindow{start: now}
		r.bySource[source] = w
	}
	w.n++
}

// expire forgets the source windows that ended (r.mu held).
func (r *refusals) expire(now time.Time) {
	for s, w := range r.bySource {
		if now.Sub(w.start) >= r.interval {
			delete(r.bySource, s)
		}
	}
}

// note counts a refusal and reports whether it is the first of its key in
// the current interval (then the caller writes it at once).
func (r *refusals) note(k refusalKey, now time.Time, what string) (first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = map[refusalKey]*refusalCount{}
	}
	if _, ok := r.open[k]; !ok && len(r.open) >= maxRefusalSources {
		k.source = "other"
	}
	rc, ok := r.open[k]
	if !ok {
		r.open[k] = &refusalCount{first: now, last: what}
		return true
	}
	rc.count++
	rc.last = what
	return false
}

// due removes and returns the counts whose interval ended before now (all
// of them when all is set).
func (r *refusals) due(now time.Time, all bool) map[refusalKey]*refusalCount {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[refusalKey]*refusalCount{}
	for k, rc := range r.open {
		if all || now.Sub(rc.first) >= r.interval {
			delete(r.open, k)
			if rc.count > 0 {
				out[k] = rc
			}
		}
	}
	return out
}

// refusedInBulk reports whether a refusal is one that is aggregated rather
// than audited one by one: any refusal of an unauthenticated caller, and a
// refused read. Refused mutations by a valid token stay individual entries:
// the token names who to stop.
func (c *call) refusedInBulk(status int) bool {
	if c.who.TokenID == "" {
		return true
	}
	return c.rt.Method == "GET" && (status == 401 || status == 403 || (status == 404 && c.project == ""))
}

// auditRefusal audits a refused request: one by one, or aggregated.
func (c *call) auditRefusal(ae *apiError) {
	s := c.s
	outcome := domain.OutcomeInvalid
	switch {
	case ae.status == 401 || ae.status == 403 || (ae.status == 404 && c.project == ""):
		outcome = domain.OutcomeDenied
	case ae.status >= 500:
		outcome = domain.OutcomeError
	}
	if !c.refusedInBulk(ae.status) {
		if c.rt.Method == "GET" {
			return // a read that failed on its own merits (a missing object)
		}
		c.detail = ae.code
		if err := s.cfg.Store.Update(context.WithoutCancel(c.ctx), func(tx store.Tx) error {
			return c.appendAudit(tx, outcome)
		}); err != nil {
			s.log.Error("audit refused request", "request_id", c.reqID, "err", err)
		}
		return
	}
	now := s.now()
	if c.who.TokenID == "" && ae.code != codeRateLimited {
		s.refused.countUnauthenticated(c.source, now)
	}
	what := c.r.Method + " " + truncate(c.r.URL.Path, 128)
	s.flushRefusals(context.WithoutCancel(c.ctx), now, false)
	if !s.refused.note(refusalKey{source: c.source, actor: c.who.actor(), code: ae.code}, now, what) {
		return
	}
	c.detail = ae.code + " " + what + " (further refusals from this source are counted for " + s.refused.interval.String() + ")"
	if c.rt.Action == "" {
		c.rt = &Route{Method: c.rt.Method, Pattern: c.rt.Pattern, Action: "request.refused"}
	}
	if err := s.cfg.Store.Update(context.WithoutCancel(c.ctx), func(tx store.Tx) error {
		return c.appendAudit(tx, domain.OutcomeDenied)
	}); err != nil {
		s.log.Error("audit refused request", "request_id", c.reqID, "err", err)
	}
}

const codeRateLimited = "rate_limited"

// checkRateLimit refuses a request from a source over its limit of
// unauthenticated refusals, before its token is even looked up. It applies
// to every request from that source (a valid token behind the same
// address waits too) until the interval ends.
func (c *call) checkRateLimit() error {
	over, until := c.s.refused.limited(c.source, c.s.now())
	if !over {
		return nil
	}
	secs := int(until.Sub(c.s.now()).Seconds()) + 1
	c.w.Header().Set("Retry-After", fmt.Sprint(secs))
	return &apiError{status: http.StatusTooManyRequests, code: codeRateLimited,
		msg: fmt.Sprintf("too many unauthenticated requests from %s", c.source), hint: fmt.Sprintf("retry in %d s with a valid token", secs)}
}

// FlushRefusals writes the aggregate entries of refusal intervals that
// ended; the control plane calls it from its loop.
func (s *Server) FlushRefusals(ctx context.Context) { s.flushRefusals(ctx, s.now(), false) }

func (s *Server) flushRefusals(ctx context.Context, now time.Time, all bool) {
	s.refused.mu.Lock()
	s.refused.expire(now)
	s.refused.mu.Unlock()
	due := s.refused.due(now, all)
	if len(due) == 0 {
		return
	}
	keys := make([]refusalKey, 0, len(due))
	for k := range due {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return due[keys[i]].first.Before(due[keys[j]].first) })
	err := s.cfg.Store.Update(ctx, func(tx store.Tx) error {
		for _, k := range keys {
			rc := due[k]
			e, err := audit.Append(ctx, tx, domain.AuditEntry{
				Time: now, Actor: k.actor, Action: "request.refused", Source: k.source, Outcome: domain.OutcomeDenied,
				Detail: fmt.Sprintf("%s: %d more refused requests since %s, the last %s", k.code, rc.count, rc.first.Format(time.RFC3339), rc.last),
			})
			if err != nil {
				return err
			}
			if s.cfg.AfterAudit != nil {
				defer s.cfg.AfterAudit(e.Seq)
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Error("audit refused requests", "err", err)
	}
}
