package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatdb/moat/internal/apitype"
)

// auditRow is one row of the Audit page: the project cell (operator's
// view only), the actor, the action and the outcome.
var auditRow = regexp.MustCompile(`<tr><td>\d+</td><td>[^<]*</td>(?:<td>([^<]*)</td>)?<td><code>([^<]*)</code></td><td>([^<]*)</td><td>[^<]*</td><td class="outcome-([a-z]+)">`)

type shownEntry struct{ project, actor, action, outcome string }

func auditRows(body string) []shownEntry {
	var out []shownEntry
	for _, m := range auditRow.FindAllStringSubmatch(body, -1) {
		out = append(out, shownEntry{m[1], m[2], m[3], m[4]})
	}
	return out
}

// TestAuditFilters: the Audit page filters by actor, outcome and time
// (action is in TestServiceNetworkExplainAudit), names a bad time next to
// its field, and scopes the project: a tenant's ?project= of another
// project shows nothing of it; the operator's selects one project.
func TestAuditFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fixture(t)
	ctx := context.Background()
	// A refused write, so the log holds a denied entry.
	if _, err := e.api(e.viewerA).CreateVPC(ctx, e.A, apitype.VPCCreate{Name: "x", Region: "us-east-1", CIDR: "10.30.0.0/16"}); err == nil {
		t.Fatal("a viewer created a VPC")
	}
	all, err := e.api(e.adminA).ListAudit(ctx, e.A)
	if err != nil {
		t.Fatal(err)
	}
	b := e.signIn(e.adminA)
	count := func(body string) int {
		m := regexp.MustCompile(`<caption>(\d+) entries`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no entry count on the page:\n%s", body)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if n := count(b.mustGet("/console/audit")); n != len(all) {
		t.Fatalf("unfiltered: %d entries, want the API's %d", n, len(all))
	}

	// Actor: the admin token's entries only.
	var actor string
	want := 0
	for _, en := range all {
		if en.Action == "vpc.create" && en.Outcome == "success" {
			actor = en.Actor
		}
	}
	for _, en := range all {
		if strings.Contains(en.Actor, actor) {
			want++
		}
	}
	if actor == "" || want == len(all) {
		t.Fatalf("fixture: actor %q has %d of %d entries; want another actor's entries too", actor, want, len(all))
	}
	body := b.mustGet("/console/audit?actor=" + url.QueryEscape(actor))
	rows := auditRows(body)
	if count(body) != want || len(rows) != want {
		t.Errorf("actor %s: %d entries, %d rows; want %d", actor, count(body), len(rows), want)
	}
	for _, r := range rows {
		if r.actor != actor {
			t.Errorf("actor filter %s shows an entry of %s", actor, r.actor)
		}
	}
	if !strings.Contains(body, `id="f-actor" name="actor" value="`+actor+`"`) {
		t.Error("the actor filter does not keep its value")
	}

	// Outcome: the viewer's refusal, and nothing that succeeded.
	rows = auditRows(b.mustGet("/console/audit?outcome=denied"))
	if len(rows) == 0 {
		t.Error("outcome=denied shows no entry; the viewer's refused vpc.create is one")
	}
	for _, r := range rows {
		if r.outcome != "denied" {
			t.Errorf("outcome=denied shows %+v", r)
		}
	}

	// Time: a window after now and one before the project existed are
	// empty; one from the past to the future holds everything.
	future := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04")
	for _, q := range []string{"since=" + future, "until=2001-01-01T00:00"} {
		if body := b.mustGet("/console/audit?" + q); count(body) != 0 || !strings.Contains(body, "No entries.") {
			t.Errorf("%s: %d entries, want none", q, count(body))
		}
	}
	if n := count(b.mustGet("/console/audit?since=2001-01-01T00:00&until=" + future)); n != len(all) {
		t.Errorf("since 2001 until in an hour: %d entries, want %d", n, len(all))
	}
	resp, body := b.get("/console/audit?since=yesterday")
	if resp.StatusCode != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="f-since-error"[^>]*><span class="msg">&#34;yesterday&#34; is not a time`).MatchString(body) {
		t.Errorf("since=yesterday: %s, want 422 with the error next to the field:\n%s", resp.Status, body)
	}

	// Scope: a tenant cannot widen it; the operator narrows it.
	if _, err := e.api(e.adminB).CreateVPC(ctx, e.B, apitype.VPCCreate{Name: "b-net", Region: "us-east-1", CIDR: "10.40.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	if body := b.mustGet("/console/audit?project=" + e.B); strings.Contains(body, e.B) || count(body) != len(all) {
		t.Errorf("a tenant's ?project= of another project shows it:\n%s", body)
	}
	ob := e.signIn(e.operator)
	rows = auditRows(ob.mustGet("/console/audit?project=" + e.B))
	if len(rows) == 0 {
		t.Fatal("operator's filter by project B shows nothing")
	}
	for _, r := range rows {
		if r.project != e.B {
			t.Errorf("operator's filter by project %s shows %+v", e.B, r)
		}
	}
	sawA, sawB := false, false
	for _, r := range auditRows(ob.mustGet("/console/audit")) {
		sawA = sawA || r.project == e.A
		sawB = sawB || r.project == e.B
	}
	if !sawA || !sawB {
		t.Errorf("operator's unfiltered audit: project A shown %v, B %v; want both", sawA, sawB)
	}
}
