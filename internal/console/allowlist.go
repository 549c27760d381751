package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

type allowlistData struct {
	Service apitype.Service
	List    apitype.Allowlist
	ETag    string
	// Saved is the revision just written (the page follows it until
	// every node applies it).
	Saved int64
}

func (c *Console) allowlist(q *req) error {
	p, id := q.project(), q.r.PathValue("id")
	s, err := q.api.GetService(q.ctx, p, id)
	if err != nil {
		return err
	}
	l, tag, err := q.api.GetAllowlist(q.ctx, p, id)
	if err != nil {
		return err
	}
	d := allowlistData{Service: s, List: l, ETag: tag}
	d.Saved, _ = strconv.ParseInt(q.r.URL.Query().Get("saved"), 10, 64)
	c.renderOn(q, http.StatusOK, "allowlist", "services", "Allowed IP addresses of "+s.Name, d)
	return nil
}

// allowlistStatus is the fragment that follows the applied state live.
func (c *Console) allowlistStatus(q *req) error {
	l, _, err := q.api.GetAllowlist(q.ctx, q.project(), q.r.PathValue("id"))
	if err != nil {
		return err
	}
	c.fragment(q, "allowlist", "applied-fragment", l)
	return nil
}

// row is one row of the allowlist editor.
type row struct {
	N           int64
	CIDR        string
	Description string
	Hint        hintData
	Err         *problem
}

type editData struct {
	Service apitype.Service
	Rows    []row
	ETag    string
	Errs    *errs
	// Conflict is the list another editor saved meanwhile.
	Conflict *apitype.Allowlist
	// ConfirmEmpty and ConfirmWide ask for a confirmation.
	ConfirmEmpty, ConfirmWide bool
}

var rowSeq atomic.Int64

func newRow(cidr, desc string) row {
	r := row{N: rowSeq.Add(1), CIDR: cidr, Description: desc}
	r.Hint = allowHint(fmt.Sprintf("row-%d-hint", r.N), cidr)
	return r
}

func (c *Console) allowlistEdit(q *req) error {
	p, id := q.project(), q.r.PathValue("id")
	s, err := q.api.GetService(q.ctx, p, id)
	if err != nil {
		return err
	}
	l, tag, err := q.api.GetAllowlist(q.ctx, p, id)
	if err != nil {
		return err
	}
	d := editData{Service: s, ETag: tag, Errs: &errs{}}
	for _, e := range l.AllowedIPs {
		d.Rows = append(d.Rows, newRow(e.CIDR, e.Description))
	}
	d.Rows = append(d.Rows, newRow("", ""))
	c.renderOn(q, http.StatusOK, "allowlist-edit", "services", "Change allowed IP addresses of "+s.Name, d)
	return nil
}

// allowlistRow is a new empty row (Add row).
func (c *Console) allowlistRow(q *req) error {
	c.fragment(q, "allowlist-edit", "row-fragment", newRow("", ""))
	return nil
}

// saveAllowlist writes the edited list with If-Match: a concurrent change
// is shown, never overwritten. An empty list and a list open to the whole
// internet are written only once confirmed.
func (c *Console) saveAllowlist(q *req) error {
	p, id := q.project(), q.r.PathValue("id")
	f := q.r.PostForm
	cidrs, descs := f["cidr"], f["description"]
	d := editData{ETag: f.Get("etag"), Errs: &errs{}}
	var entries []apitype.AllowEntry
	for i, cidr := range cidrs {
		desc := ""
		if i < len(descs) {
			desc = descs[i]
		}
		if strings.TrimSpace(cidr) == "" && strings.TrimSpace(desc) == "" {
			continue
		}
		d.Rows = append(d.Rows, newRow(cidr, desc))
		entries = append(entries, apitype.AllowEntry{CIDR: strings.TrimSpace(cidr), Description: desc})
	}
	s, err := q.api.GetService(q.ctx, p, id)
	if err != nil {
		return err
	}
	d.Service = s
	confirmEmpty := f.Get("confirm_empty") == "yes"
	switch {
	case len(entries) == 0 && !confirmEmpty:
		d.ConfirmEmpty = true
	case wideOpen(entries) && f.Get("confirm_wide") != "yes":
		d.ConfirmWide = true
	default:
		if entries == nil {
			entries = []apitype.AllowEntry{}
		}
		l, _, err := q.api.PutAllowlist(q.ctx, p, id, apitype.AllowlistUpdate{AllowedIPs: entries, ConfirmEmpty: confirmEmpty}, d.ETag)
		if err == nil {
			http.Redirect(q.w, q.r, fmt.Sprintf("/console/services/%s/allowlist?saved=%d", id, l.Revision), http.StatusSeeOther)
			return nil
		}
		if client.HasCode(err, "stale_revision") {
			cur, _, gerr := q.api.GetAllowlist(q.ctx, p, id)
			if gerr != nil {
				return gerr
			}
			d.Conflict = &cur
		} else if err := invalid(err, d.Errs); err != nil {
			return err
		}
		d.placeErrors()
	}
	if len(d.Rows) == 0 || d.Rows[len(d.Rows)-1].CIDR != "" {
		d.Rows = append(d.Rows, newRow("", ""))
	}
	c.renderOn(q, http.StatusUnprocessableEntity, "allowlist-edit", "services", "Change allowed IP addresses of "+s.Name, d)
	return nil
}

// placeErrors moves an error about allowed_ips[i] next to row i.
func (d *editData) placeErrors() {
	var rest []*problem
	for _, p := range d.Errs.List {
		var i int
		var tail string
		if n, _ := fmt.Sscanf(p.Field, "allowed_ips[%d].%s", &i, &tail); n == 2 && i >= 0 && i < len(d.Rows) {
			d.Rows[i].Err = p
			continue
		}
		rest = append(rest, p)
	}
	d.Errs.List = rest
}

// wideOpen reports whether entries admit the whole internet, as the API
// will read them.
func wideOpen(entries []apitype.AllowEntry) bool {
	norm := make([]domain.AllowEntry, 0, len(entries))
	for _, e := range entries {
		if p, err := domain.ParsePrefix("cidr", e.CIDR, true); err == nil {
			norm = append(norm, domain.AllowEntry{CIDR: p.String()})
		}
	}
	return domain.IsWideOpen(norm)
}

// hintAllowCIDR shows, before submit, how the API will read one row's
// CIDR: a bare address becomes /32 or /128, a non-canonical prefix gets
// its hint, and how many addresses the range admits.
func (c *Console) hintAllowCIDR(q *req) error {
	id := q.r.FormValue("hint_id")
	if !strings.HasPrefix(id, "row-") {
		id = "row-hint"
	}
	c.fragment(q, "allowlist-edit", "hint", allowHint(id, q.r.FormValue("cidr")))
	return nil
}

func allowHint(id, cidr string) hintData {
	d := hintData{ID: id}
	s := strings.TrimSpace(cidr)
	if s == "" {
		return d
	}
	p, err := domain.ParsePrefix("cidr", s, true)
	if err != nil {
		d.Problem = domainProblem(err)
		return d
	}
	d.OK = addressCount(p)
	if p.String() != s {
		d.OK = "becomes " + p.String() + ": " + d.OK
	}
	if p.Bits() == 0 {
		d.OK += " (the whole internet)"
	}
	return d
}
