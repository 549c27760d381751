package console

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

type servicesData struct {
	Services []apitype.Service
	Regions  []apitype.Region
	Form     apitype.ServiceCreate
	Errs     *errs
	// Created is the service just created, with its admin password (shown
	// once).
	Created *apitype.Service
	// Project holds the service and node quotas; Nodes counts the live
	// services' nodes.
	Project apitype.Project
	Nodes   int
}

func (c *Console) services(q *req) error {
	d, err := c.loadServices(q)
	if err != nil {
		return err
	}
	c.renderOn(q, http.StatusOK, "services", "services", "Services", d)
	return nil
}

func (c *Console) loadServices(q *req) (*servicesData, error) {
	d := &servicesData{Errs: &errs{}, Form: apitype.ServiceCreate{Nodes: 1}}
	if q.project() == "" {
		return d, nil
	}
	all, err := q.api.ListServices(q.ctx, q.project())
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		if !domain.Gone(s.State) {
			d.Services = append(d.Services, s)
			d.Nodes += s.Nodes
		}
	}
	if d.Project, err = q.api.GetProject(q.ctx, q.project()); err != nil {
		return nil, err
	}
	d.Regions, err = q.api.ListRegions(q.ctx)
	return d, err
}

func (c *Console) createService(q *req) error {
	in := apitype.ServiceCreate{Name: strings.TrimSpace(q.r.PostFormValue("name")), Region: q.r.PostFormValue("region")}
	in.Nodes, _ = strconv.Atoi(q.r.PostFormValue("nodes"))
	svc, err := q.api.CreateService(q.ctx, q.project(), in)
	e := &errs{}
	if err != nil {
		if err := invalid(err, e); err != nil {
			return err
		}
	}
	d, lerr := c.loadServices(q)
	if lerr != nil {
		return lerr
	}
	status := http.StatusOK
	if err != nil {
		d.Errs, d.Form, status = e, in, http.StatusUnprocessableEntity
	} else {
		d.Created = &svc
	}
	c.renderOn(q, status, "services", "services", "Services", d)
	return nil
}

type serviceData struct {
	Service apitype.Service
	VPC     *apitype.VPC
	Backups []apitype.Backup
	// BackupsOff is why there are no backups at all.
	BackupsOff *problem
	Audit      []apitype.AuditEntry
	Psql       string
	Errs       *errs
	// Op is the operation just started (a backup, a restore).
	Op *apitype.Operation
	// Restored is the service a restore created.
	Restored *apitype.Service
	Restore  restoreForm
}

type restoreForm struct {
	Name   string
	ToTime string
}

func (c *Console) service(q *req) error {
	d, err := c.loadService(q)
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
	c.renderOn(q, http.StatusOK, "service", "services", "Service "+d.Service.Name, d)
	return nil
}

func (c *Console) loadService(q *req) (*serviceData, error) {
	p, id := q.project(), q.r.PathValue("id")
	s, err := q.api.GetService(q.ctx, p, id)
	if err != nil {
		return nil, err
	}
	d := &serviceData{Service: s, Errs: &errs{}}
	if s.VPCID != "" {
		v, err := q.api.GetVPC(q.ctx, p, s.VPCID)
		if err != nil {
			return nil, err
		}
		d.VPC = &v
	}
	if d.Backups, err = q.api.ListBackups(q.ctx, p, id); err != nil {
		// A control plane without a backup store answers 501: the page
		// says so in the backups section.
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented {
			return nil, err
		}
		d.BackupsOff = problemOf(ae)
	}
	entries, err := q.api.ListAudit(q.ctx, p)
	if err != nil {
		return nil, err
	}
	for _, e := range slices.Backward(entries) {
		if e.Target == id {
			d.Audit = append(d.Audit, e)
		}
	}
	if cn := s.Connection; cn != nil {
		d.Psql = fmt.Sprintf(`psql "host=%s port=%d dbname=%s user=%s sslmode=verify-full sslrootcert=%s-ca.pem"`, cn.Host, cn.Port, cn.Database, cn.User, p)
	}
	return d, nil
}

// serviceCA downloads the project CA certificate clients verify the
// service's server certificate with.
func (c *Console) serviceCA(q *req) error {
	p := q.project()
	if _, err := q.api.GetService(q.ctx, p, q.r.PathValue("id")); err != nil {
		return err
	}
	ca, err := q.api.GetProjectCA(q.ctx, p)
	if err != nil {
		return err
	}
	q.w.Header().Set("Content-Type", "application/x-pem-file")
	q.w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", p+"-ca.pem"))
	q.w.Write([]byte(ca.PEM))
	return nil
}

// serviceAgain renders the service page again with a refusal of the API.
func (c *Console) serviceAgain(q *req, err error, keep func(*serviceData)) error {
	e := &errs{}
	if err := invalid(err, e); err != nil {
		return err
	}
	d, lerr := c.loadService(q)
	if lerr != nil {
		return lerr
	}
	d.Errs = e
	keep(d)
	c.renderOn(q, http.StatusUnprocessableEntity, "service", "services", "Service "+d.Service.Name, d)
	return nil
}

func (c *Console) createBackup(q *req) error {
	id := q.r.PathValue("id")
	op, err := q.api.CreateBackup(q.ctx, q.project(), id)
	if err != nil {
		return c.serviceAgain(q, err, func(*serviceData) {})
	}
	http.Redirect(q.w, q.r, "/console/services/"+id+"?op="+op.ID, http.StatusSeeOther)
	return nil
}

// restoreService creates a new service from this one's backups, to a
// point in time (UTC) or to now.
func (c *Console) restoreService(q *req) error {
	id := q.r.PathValue("id")
	f := restoreForm{Name: strings.TrimSpace(q.r.PostFormValue("name")), ToTime: strings.TrimSpace(q.r.PostFormValue("to_time"))}
	in := apitype.ServiceCreate{Name: f.Name, RestoreFrom: &apitype.RestoreFrom{ServiceID: id}}
	if f.ToTime != "" {
		t, err := parseFormTime(f.ToTime)
		if err != nil {
			return c.serviceAgain(q, formError("to_time", err.Error(), "use YYYY-MM-DDTHH:MM in UTC, or leave it empty for now"), func(d *serviceData) { d.Restore = f })
		}
		in.RestoreFrom.ToTime = &t
	}
	svc, err := q.api.CreateService(q.ctx, q.project(), in)
	if err != nil {
		return c.serviceAgain(q, err, func(d *serviceData) { d.Restore = f })
	}
	d, err := c.loadService(q)
	if err != nil {
		return err
	}
	d.Restored = &svc
	c.renderOn(q, http.StatusOK, "service", "services", "Service "+d.Service.Name, d)
	return nil
}

// parseFormTime reads a datetime-local value (or RFC 3339) as UTC.
func parseFormTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time", s)
}

func (c *Console) deleteService(q *req) error {
	if q.r.PostFormValue("confirm") != q.r.PathValue("id") {
		return c.serviceAgain(q, formError("confirm", "type the service's ID to confirm", "deleting a service wipes its nodes and deletes its backups"), func(*serviceData) {})
	}
	if _, err := q.api.DeleteService(q.ctx, q.project(), q.r.PathValue("id")); err != nil {
		return c.serviceAgain(q, err, func(*serviceData) {})
	}
	http.Redirect(q.w, q.r, "/console/services", http.StatusSeeOther)
	return nil
}

// serviceLive is the fragment the service page polls: state and nodes.
func (c *Console) serviceLive(q *req) error {
	s, err := q.api.GetService(q.ctx, q.project(), q.r.PathValue("id"))
	if err != nil {
		return err
	}
	c.fragment(q, "service", "service-live-fragment", s)
	return nil
}
