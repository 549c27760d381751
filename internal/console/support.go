package console

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/moatdb/moat/internal/apitype"
)

// supportData is the Support page: a tenant's requests and the form to
// file one; the operator's queue of every project's open requests with
// Approve and Decline, and the answered ones.
type supportData struct {
	// Project is the project's quotas (tenant).
	Project apitype.Project
	// Mine are the project's requests, newest first (tenant).
	Mine []apitype.SupportRequest
	// Open and Answered are every project's requests (operator).
	Open, Answered []apitype.SupportRequest
	Form           supportForm
	// DecideFor is the request whose approve or decline form Errs is about.
	DecideFor string
	Reply     string
	Filed     *apitype.SupportRequest
	Errs      *errs
}

type supportForm struct {
	Resource, Requested, Message string
}

// supportResources are the quotas a request may raise, in the form's order.
var supportResources = []string{"vpcs", "services", "nodes"}

func (c *Console) support(q *req) error {
	d := &supportData{Errs: &errs{}, Form: supportForm{Resource: q.r.URL.Query().Get("resource")}}
	if err := c.loadSupport(q, d); err != nil {
		return err
	}
	if id := q.r.URL.Query().Get("filed"); id != "" {
		for i := range d.Mine {
			if d.Mine[i].ID == id {
				d.Filed = &d.Mine[i]
			}
		}
	}
	c.renderOn(q, http.StatusOK, "support", "support", "Support", d)
	return nil
}

func (c *Console) loadSupport(q *req, d *supportData) error {
	if q.sess.operator() {
		all, err := q.api.ListSupportRequests(q.ctx, "", "")
		if err != nil {
			return err
		}
		for i := len(all) - 1; i >= 0; i-- {
			if all[i].State == "open" {
				d.Open = append(d.Open, all[i])
			} else {
				d.Answered = append(d.Answered, all[i])
			}
		}
		return nil
	}
	p := q.project()
	if p == "" {
		return nil
	}
	proj, err := q.api.GetProject(q.ctx, p)
	if err != nil {
		return err
	}
	d.Project = proj
	rs, err := q.api.ListSupportRequests(q.ctx, p, "")
	if err != nil {
		return err
	}
	for i := len(rs) - 1; i >= 0; i-- {
		d.Mine = append(d.Mine, rs[i])
	}
	if d.Form.Resource == "" {
		d.Form.Resource = "vpcs"
	}
	if d.Form.Requested == "" {
		d.Form.Requested = strconv.Itoa(quotaOf(proj, d.Form.Resource) + 2)
	}
	return nil
}

// quotaOf is p's quota of resource as the API reports it.
func quotaOf(p apitype.Project, resource string) int {
	switch resource {
	case "services":
		return p.ServiceQuota
	case "nodes":
		return p.NodeQuota
	}
	return p.VPCQuota
}

// supportAgain renders the page again with err (the API's refusal of a
// form) shown, or returns err.
func (c *Console) supportAgain(q *req, err error, d *supportData) error {
	if err := invalid(err, d.Errs); err != nil {
		return err
	}
	if err := c.loadSupport(q, d); err != nil {
		return err
	}
	c.renderOn(q, http.StatusUnprocessableEntity, "support", "support", "Support", d)
	return nil
}

func (c *Console) fileSupport(q *req) error {
	f := supportForm{Resource: q.r.PostFormValue("resource"), Requested: strings.TrimSpace(q.r.PostFormValue("requested")), Message: q.r.PostFormValue("message")}
	d := &supportData{Errs: &errs{}, Form: f}
	n, err := strconv.Atoi(f.Requested)
	if err != nil {
		return c.supportAgain(q, formError("requested", strconv.Quote(f.Requested)+" is not a number", "give the quota you need, e.g. 5"), d)
	}
	r, err := q.api.CreateSupportRequest(q.ctx, q.project(), apitype.SupportRequestCreate{Resource: f.Resource, Requested: n, Message: f.Message})
	if err != nil {
		return c.supportAgain(q, err, d)
	}
	http.Redirect(q.w, q.r, "/console/support?filed="+r.ID, http.StatusSeeOther)
	return nil
}

func (c *Console) approveSupport(q *req) error { return c.decideSupport(q, true) }

func (c *Console) declineSupport(q *req) error { return c.decideSupport(q, false) }

func (c *Console) decideSupport(q *req, approve bool) error {
	id, reply := q.r.PathValue("id"), q.r.PostFormValue("reply")
	var err error
	if approve {
		_, err = q.api.ApproveSupportRequest(q.ctx, id, reply)
	} else {
		_, err = q.api.DeclineSupportRequest(q.ctx, id, reply)
	}
	if err != nil {
		return c.supportAgain(q, err, &supportData{Errs: &errs{}, DecideFor: id, Reply: reply})
	}
	http.Redirect(q.w, q.r, "/console/support", http.StatusSeeOther)
	return nil
}
