package console

import (
	"net/http"

	"github.com/moatdb/moat/internal/apitype"
)

type networkData struct {
	Service apitype.Service
	VPC     *apitype.VPC
	// VPCs are the project's active VPCs in the service's region.
	VPCs []apitype.VPC
	// PrivateHost is the host name the service has once attached.
	PublicHost, PrivateHost string
	Op                      *apitype.Operation
	Errs                    *errs
}

// network is Operations > VPC: attach, move or detach, with the warning
// that the host name changes and the operation's progress.
func (c *Console) network(q *req) error {
	d, err := c.loadNetwork(q)
	if err != nil {
		return err
	}
	if op := q.r.URL.Query().Get("op"); op != "" {
		o, err := q.api.GetOperation(q.ctx, q.project(), op)
		if err != nil {
			return err
		}
		d.Op = &o
	}
	c.renderOn(q, http.StatusOK, "network", "services", "VPC of "+d.Service.Name, d)
	return nil
}

func (c *Console) loadNetwork(q *req) (*networkData, error) {
	p := q.project()
	s, err := q.api.GetService(q.ctx, p, q.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	d := &networkData{Service: s, Errs: &errs{},
		PublicHost: s.ID + "." + p + "." + c.cfg.Domain, PrivateHost: s.ID + "." + p + ".vpc." + c.cfg.Domain}
	vpcs, err := q.api.ListVPCs(q.ctx, p)
	if err != nil {
		return nil, err
	}
	for _, v := range vpcs {
		if v.ID == s.VPCID {
			d.VPC = &v
		}
		if v.Region == s.Region && v.State == "active" && v.ID != s.VPCID {
			d.VPCs = append(d.VPCs, v)
		}
	}
	return d, nil
}

func (c *Console) networkAgain(q *req, err error) error {
	e := &errs{}
	if err := invalid(err, e); err != nil {
		return err
	}
	d, lerr := c.loadNetwork(q)
	if lerr != nil {
		return lerr
	}
	d.Errs = e
	c.renderOn(q, http.StatusUnprocessableEntity, "network", "services", "VPC of "+d.Service.Name, d)
	return nil
}

func (c *Console) attach(q *req) error {
	id := q.r.PathValue("id")
	op, err := q.api.AttachService(q.ctx, q.project(), id, apitype.AttachRequest{VPCID: q.r.PostFormValue("vpc_id")})
	if err != nil {
		return c.networkAgain(q, err)
	}
	http.Redirect(q.w, q.r, "/console/services/"+id+"/network?op="+op.ID, http.StatusSeeOther)
	return nil
}

func (c *Console) detach(q *req) error {
	id := q.r.PathValue("id")
	op, err := q.api.DetachService(q.ctx, q.project(), id)
	if err != nil {
		return c.networkAgain(q, err)
	}
	http.Redirect(q.w, q.r, "/console/services/"+id+"/network?op="+op.ID, http.StatusSeeOther)
	return nil
}

// operation is the fragment an operation's progress polls until it ends.
func (c *Console) operation(q *req) error {
	o, err := q.api.GetOperation(q.ctx, q.project(), q.r.PathValue("id"))
	if err != nil {
		return err
	}
	c.fragment(q, "network", "operation-fragment", o)
	return nil
}
