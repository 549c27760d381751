package console

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// vpcRow is one VPC with what the table shows beside it.
type vpcRow struct {
	apitype.VPC
	Services []apitype.Service
	Peerings []apitype.Peering
}

// Settled reports whether the VPC and its peerings stopped changing.
func (v vpcRow) Settled() bool {
	if !settled(v.State) {
		return false
	}
	for _, p := range v.Peerings {
		if !settled(p.State) {
			return false
		}
	}
	return true
}

type vpcsData struct {
	VPCs    []vpcRow
	Regions []apitype.Region
	Live    int
	Quota   int
	// Form is the create form as submitted (kept on error).
	Form apitype.VPCCreate
	// Peer is the add-peering form as submitted, for VPC PeerFor.
	Peer    peerForm
	PeerFor string
	Errs    *errs
}

type peerForm struct {
	apitype.PeeringCreate
	CIDRs string
}

func (c *Console) vpcs(q *req) error {
	d, err := c.loadVPCs(q)
	if err != nil {
		return err
	}
	c.renderOn(q, http.StatusOK, "vpcs", "vpcs", "VPCs", d)
	return nil
}

func (c *Console) loadVPCs(q *req) (*vpcsData, error) {
	p := q.project()
	d := &vpcsData{Errs: &errs{}}
	if p == "" {
		return d, nil
	}
	proj, err := q.api.GetProject(q.ctx, p)
	if err != nil {
		return nil, err
	}
	d.Quota = proj.VPCQuota
	vpcs, err := q.api.ListVPCs(q.ctx, p)
	if err != nil {
		return nil, err
	}
	svcs, err := q.api.ListServices(q.ctx, p)
	if err != nil {
		return nil, err
	}
	pcs, err := q.api.ListPeerings(q.ctx, p, "")
	if err != nil {
		return nil, err
	}
	if d.Regions, err = q.api.ListRegions(q.ctx); err != nil {
		return nil, err
	}
	for _, v := range vpcs {
		if domain.Gone(v.State) {
			continue
		}
		d.Live++
		d.VPCs = append(d.VPCs, vpcRowOf(v, svcs, pcs))
	}
	return d, nil
}

func vpcRowOf(v apitype.VPC, svcs []apitype.Service, pcs []apitype.Peering) vpcRow {
	row := vpcRow{VPC: v}
	for _, s := range svcs {
		if s.VPCID == v.ID && !domain.Gone(s.State) {
			row.Services = append(row.Services, s)
		}
	}
	for _, pc := range pcs {
		if pc.VPCID == v.ID && !domain.Gone(pc.State) {
			row.Peerings = append(row.Peerings, pc)
		}
	}
	return row
}

// vpcLive is the fragment a VPC row polls: its state, cloud ID and
// peerings.
func (c *Console) vpcLive(q *req) error {
	p := q.project()
	v, err := q.api.GetVPC(q.ctx, p, q.r.PathValue("id"))
	if err != nil {
		return err
	}
	pcs, err := q.api.ListPeerings(q.ctx, p, v.ID)
	if err != nil {
		return err
	}
	svcs, err := q.api.ListServices(q.ctx, p)
	if err != nil {
		return err
	}
	c.fragment(q, "vpcs", "vpc-live-oob", vpcRowOf(v, svcs, pcs))
	return nil
}

// invalid re-renders a form with the API's refusal of its input (400,
// 409, 412, 413, 422); other errors (401, 403, 404, 5xx) go up to the
// error page with the API's status.
func invalid(err error, e *errs) error {
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusUnauthorized &&
		ae.Status != http.StatusForbidden && ae.Status != http.StatusNotFound {
		e.add(problemOf(ae))
		return nil
	}
	return err
}

func (c *Console) createVPC(q *req) error {
	in := apitype.VPCCreate{Name: strings.TrimSpace(q.r.PostFormValue("name")), Region: q.r.PostFormValue("region"), CIDR: strings.TrimSpace(q.r.PostFormValue("cidr"))}
	_, err := q.api.CreateVPC(q.ctx, q.project(), in)
	if err == nil {
		http.Redirect(q.w, q.r, "/console/vpcs", http.StatusSeeOther)
		return nil
	}
	return c.vpcsAgain(q, err, func(d *vpcsData) { d.Form = in })
}

// vpcsAgain renders the VPC page again with err shown (a refusal of the
// API), or returns err.
func (c *Console) vpcsAgain(q *req, err error, keep func(*vpcsData)) error {
	e := &errs{}
	if err := invalid(err, e); err != nil {
		return err
	}
	d, lerr := c.loadVPCs(q)
	if lerr != nil {
		return lerr
	}
	d.Errs = e
	keep(d)
	c.renderOn(q, http.StatusUnprocessableEntity, "vpcs", "vpcs", "VPCs", d)
	return nil
}

func (c *Console) deleteVPC(q *req) error {
	id := q.r.PathValue("id")
	_, err := q.api.DeleteVPC(q.ctx, q.project(), id)
	if err == nil {
		http.Redirect(q.w, q.r, "/console/vpcs", http.StatusSeeOther)
		return nil
	}
	return c.vpcsAgain(q, err, func(*vpcsData) {})
}

func (c *Console) createPeering(q *req) error {
	vpc := q.r.PathValue("id")
	f := peerForm{PeeringCreate: apitype.PeeringCreate{VPCID: vpc, PeerAccountID: strings.TrimSpace(q.r.PostFormValue("peer_account_id")),
		PeerVPCID: strings.TrimSpace(q.r.PostFormValue("peer_vpc_id")), PeerRegion: strings.TrimSpace(q.r.PostFormValue("peer_region"))},
		CIDRs: q.r.PostFormValue("peer_cidrs")}
	f.PeerCIDRs = splitList(f.CIDRs)
	_, err := q.api.CreatePeering(q.ctx, q.project(), f.PeeringCreate)
	if err == nil {
		http.Redirect(q.w, q.r, "/console/vpcs", http.StatusSeeOther)
		return nil
	}
	return c.vpcsAgain(q, err, func(d *vpcsData) { d.Peer, d.PeerFor = f, vpc })
}

// splitList splits a comma- or space-separated list.
func splitList(s string) []string {
	return append([]string{}, strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })...)
}

func (c *Console) deletePeering(q *req) error {
	_, err := q.api.DeletePeering(q.ctx, q.project(), q.r.PathValue("id"))
	if err == nil {
		http.Redirect(q.w, q.r, "/console/vpcs", http.StatusSeeOther)
		return nil
	}
	return c.vpcsAgain(q, err, func(*vpcsData) {})
}

// setQuota sets the project's VPC quota (the operator's side of a quota
// increase).
func (c *Console) setQuota(q *req) error {
	raw := strings.TrimSpace(q.r.PostFormValue("vpcs"))
	n, err := strconv.Atoi(raw)
	if err != nil {
		return c.vpcsAgain(q, formError("vpcs", strconv.Quote(raw)+" is not a number", "give the new VPC quota, e.g. 5"), func(*vpcsData) {})
	}
	if _, err := q.api.SetQuota(q.ctx, q.project(), apitype.QuotaUpdate{VPCs: &n}); err != nil {
		return c.vpcsAgain(q, err, func(*vpcsData) {})
	}
	http.Redirect(q.w, q.r, "/console/vpcs", http.StatusSeeOther)
	return nil
}

type hintData struct {
	ID      string
	Problem *problem
	OK      string
}

// hintVPCCIDR validates the create form's CIDR as the API will, with the
// domain's own function, before submit.
func (c *Console) hintVPCCIDR(q *req) error {
	d := hintData{ID: "cidr-hint"}
	if s := strings.TrimSpace(q.r.FormValue("cidr")); s != "" {
		if p, err := domain.ParseVPCCIDR(s); err != nil {
			d.Problem = domainProblem(err)
		} else {
			d.OK = p.String() + ": " + addressCount(p)
		}
	}
	c.fragment(q, "vpcs", "hint", d)
	return nil
}

func domainProblem(err error) *problem {
	if de := domain.AsError(err); de != nil {
		return &problem{Field: de.Field, Code: de.Code, Msg: de.Msg, Hint: de.Hint}
	}
	return &problem{Msg: err.Error()}
}
