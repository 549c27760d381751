package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"math/big"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/moatdb/moat/internal/apitype"
	"github.com/moatdb/moat/internal/client"
	"github.com/moatdb/moat/internal/domain"
)

// problem is an error shown next to a field (Field set) or above a form:
// the API's own message and hint.
type problem struct {
	Field string
	Code  string
	Msg   string
	Hint  string
}

func problemOf(e *client.Error) *problem {
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	return &problem{Field: e.Field, Code: e.Code, Msg: msg, Hint: e.Hint}
}

// errs is a form's errors: one may be about a field, the rest above it.
type errs struct{ List []*problem }

func (e *errs) add(p *problem) {
	if p != nil {
		e.List = append(e.List, p)
	}
}

// For returns the error about field, or nil.
func (e *errs) For(field string) *problem {
	if e == nil {
		return nil
	}
	for _, p := range e.List {
		if about(p.Field, field) {
			return p
		}
	}
	return nil
}

// about reports whether an error's field (peer_cidrs[1], say) is about
// a form's field (peer_cidrs).
func about(errField, field string) bool {
	return errField == field || strings.HasPrefix(errField, field+"[") || strings.HasPrefix(errField, field+".")
}

// Form returns the errors not about one of fields (shown above the form).
func (e *errs) Form(fields ...string) []*problem {
	if e == nil {
		return nil
	}
	var out []*problem
	for _, p := range e.List {
		known := false
		for _, f := range fields {
			known = known || about(p.Field, f)
		}
		if !known {
			out = append(out, p)
		}
	}
	return out
}

// view is what every page template gets.
type view struct {
	Title    string
	Section  string
	CSRF     string
	Role     string
	RoleNote string
	CanWrite bool
	Operator bool
	Project  string
	Projects []string
	Poll     int // milliseconds
	Data     any
}

// pages holds one template set per page (the layout plus the page's own
// file), and the fragments htmx asks for.
type pages struct {
	sets map[string]*template.Template
}

var funcs = template.FuncMap{
	"time": func(v any) string {
		var t time.Time
		switch x := v.(type) {
		case time.Time:
			t = x
		case *time.Time:
			if x != nil {
				t = *x
			}
		}
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": strings.Join,
	"addresses": func(cidr string) string {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return ""
		}
		return addressCount(p)
	},
	"settled": settled,
	// opEnded: an operation polls until it succeeds or fails (running is
	// not its end, as it is a service's steady state).
	"opEnded":  func(state string) bool { return domain.OperationMachine.Terminal(state) },
	"fieldErr": func(id string, p *problem) fieldError { return fieldError{ID: id, Problem: p} },
	"wrap":     func(v view, row any) rowView { return rowView{V: v, Row: row} },
	"hintView": func(h hintData) view { return view{Data: h} },
	"list":     func(s ...string) []string { return s },
	"decideErr": func(d *supportData, id string) *problem {
		if d.DecideFor != id {
			return nil
		}
		return d.Errs.For("reply")
	},
	"resources": func() []string { return supportResources },
	"peerErr": func(d *vpcsData, vpc, field string) *problem {
		if d.PeerFor != vpc {
			return nil
		}
		return d.Errs.For(field)
	},
}

// fieldError is the error paragraph of one field.
type fieldError struct {
	ID      string
	Problem *problem
}

// rowView is one row of a table with the page's view.
type rowView struct {
	V   view
	Row any
}

func parsePages() (*pages, error) {
	base, err := template.New("base").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: parse layout: %w", err)
	}
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{sets: map[string]*template.Template{}}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" {
			continue
		}
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, f)
		}
		if err != nil {
			return nil, fmt.Errorf("console: parse %s: %w", f, err)
		}
		p.sets[name] = t
	}
	return p, nil
}

func (c *Console) view(s *session, title, section string, data any) view {
	v := view{Title: title, Section: section, Data: data, Poll: int(c.cfg.Poll / time.Millisecond)}
	if s != nil {
		v.CSRF, v.Role, v.RoleNote, v.CanWrite, v.Operator, v.Project = s.csrf, s.role, s.roleNote, s.canWrite(), s.operator(), s.currentProject()
	}
	return v
}

// render executes page (the layout around it) with data; set is the
// template file.
func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, page, title string, data any) {
	c.exec(w, s, status, page, "layout", c.view(s, title, page, data))
}

// renderOn is render for a page of a section (the navigation's current
// item), with the operator's projects listed for the project switcher.
func (c *Console) renderOn(q *req, status int, page, section, title string, data any) {
	v := c.view(q.sess, title, section, data)
	if q.sess.operator() {
		if ps, err := q.api.ListProjects(q.ctx); err == nil {
			for _, p := range ps {
				v.Projects = append(v.Projects, p.ID)
			}
		}
	}
	c.exec(q.w, q.sess, status, page, "layout", v)
}

// fragment executes one named template of page's set, without the layout
// (htmx swaps it into the page).
func (c *Console) fragment(q *req, page, name string, data any) {
	c.exec(q.w, q.sess, http.StatusOK, page, name, c.view(q.sess, "", page, data))
}

func (c *Console) exec(w http.ResponseWriter, s *session, status int, page, name string, v view) {
	t := c.pages.sets[page]
	var buf bytes.Buffer
	if t == nil {
		c.log.Error("console template missing", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, name, v); err != nil {
		c.log.Error("console template", "page", page, "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorData struct {
	Status  int
	Problem *problem
	Message string
}

func (c *Console) renderError(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	c.render(w, r, s, status, "error", http.StatusText(status), errorData{Status: status, Message: msg})
}

func (c *Console) renderProblem(w http.ResponseWriter, r *http.Request, s *session, e *client.Error) {
	c.render(w, r, s, e.Status, "error", http.StatusText(e.Status), errorData{Status: e.Status, Problem: problemOf(e)})
}

// addressCount says how many addresses p admits.
func addressCount(p netip.Prefix) string {
	host := p.Addr().BitLen() - p.Bits()
	if host == 0 {
		return "1 address"
	}
	if host <= 62 {
		return fmt.Sprintf("%s addresses", commas(new(big.Int).Lsh(big.NewInt(1), uint(host)).String()))
	}
	return fmt.Sprintf("2^%d addresses", host)
}

func commas(s string) string {
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	return b.String()
}

// settled reports whether an object's state no longer changes by itself
// (live updates stop polling).
func settled(state string) bool {
	switch state {
	case "active", "running", "succeeded", "failed", "rejected", "expired", "deleted":
		return true
	}
	return false
}

// formError is a refusal the console makes itself, before calling the
// API (a form value that is not even of the API's type), shaped like the
// API's.
func formError(field, msg, hint string) error {
	return &client.Error{Problem: apitype.Problem{Status: http.StatusBadRequest, Code: "invalid_input", Field: field, Detail: msg, Hint: hint}}
}
