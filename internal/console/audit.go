package console

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

type auditFilter struct {
	Action, Actor, Outcome, Project string
	Since, Until                    string
}

type auditData struct {
	Filter  auditFilter
	Entries []apitype.AuditEntry
	Total   int
	// Shown caps the entries on one page (newest first).
	Shown  int
	Verify *apitype.AuditVerify
	Errs   *errs
}

const auditPageSize = 500

// audit lists audit entries, newest first, filtered by action (prefix),
// actor, outcome and time: the project's, or for the operator every
// project's (or one's).
func (c *Console) audit(q *req) error {
	d, status, err := c.loadAudit(q)
	if err != nil {
		return err
	}
	c.renderOn(q, status, "audit", "audit", "Audit log", d)
	return nil
}

func (c *Console) loadAudit(q *req) (*auditData, int, error) {
	v := q.r.URL.Query()
	d := &auditData{Errs: &errs{}, Filter: auditFilter{Action: strings.TrimSpace(v.Get("action")), Actor: strings.TrimSpace(v.Get("actor")),
		Outcome: v.Get("outcome"), Project: strings.TrimSpace(v.Get("project")), Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until"))}}
	var since, until time.Time
	status := http.StatusOK
	for _, t := range []struct {
		field, val string
		dst        *time.Time
	}{{"since", d.Filter.Since, &since}, {"until", d.Filter.Until, &until}} {
		if t.val == "" {
			continue
		}
		var err error
		if *t.dst, err = parseFormTime(t.val); err != nil {
			d.Errs.add(&problem{Field: t.field, Code: "invalid_time", Msg: err.Error(), Hint: "use YYYY-MM-DDTHH:MM in UTC"})
			status = http.StatusUnprocessableEntity
		}
	}
	p := q.project()
	if q.sess.operator() {
		p = d.Filter.Project // empty: every project
	}
	var all []apitype.AuditEntry
	var err error
	if p != "" || q.sess.operator() {
		if all, err = q.api.ListAudit(q.ctx, p); err != nil {
			return nil, 0, err
		}
	}
	for _, e := range slices.Backward(all) {
		f := d.Filter
		if f.Action != "" && !strings.HasPrefix(e.Action, f.Action) || f.Actor != "" && !strings.Contains(e.Actor, f.Actor) ||
			f.Outcome != "" && e.Outcome != f.Outcome || !since.IsZero() && e.Time.Before(since) || !until.IsZero() && e.Time.After(until) {
			continue
		}
		d.Total++
		if len(d.Entries) < auditPageSize {
			d.Entries = append(d.Entries, e)
		}
	}
	d.Shown = len(d.Entries)
	return d, status, nil
}

// auditVerify walks the audit chain and its signed checkpoints (operator).
func (c *Console) auditVerify(q *req) error {
	res, err := q.api.VerifyAudit(q.ctx)
	if err != nil {
		return err
	}
	d, status, err := c.loadAudit(q)
	if err != nil {
		return err
	}
	d.Verify = &res
	c.renderOn(q, status, "audit", "audit", "Audit log", d)
	return nil
}
