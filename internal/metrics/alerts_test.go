package metrics_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/moatdb/moat/internal/testenv"
)

const rulesDir = "../../docs/prometheus"

func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := testenv.MustHaveCommand(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = rulesDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestAlertRulesUseExposedNames checks that every metric the rules name is
// one this package exposes, so a rename cannot silently disable an alert.
func TestAlertRulesUseExposedNames(t *testing.T) {
	t.Parallel()
	rules, err := os.ReadFile(rulesDir + "/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	families, err := exercised(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]bool{}
	for _, f := range families {
		exposed[f.GetName()] = true
	}
	out := scrapeTenant(t, tenants(), "prj-a")
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+)`).FindAllStringSubmatch(out, -1) {
		exposed[m[1]] = true
	}
	var file struct {
		Groups []struct {
			Rules []struct{ Expr string }
		}
	}
	if err := yaml.Unmarshal(rules, &file); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			names = append(names, regexp.MustCompile(`\b(moat|pg)_[a-z0-9_]+`).FindAllString(r.Expr, -1)...)
		}
	}
	if len(names) < 10 {
		t.Fatalf("found %d metric names in alerts.yml, want the rules' metrics", len(names))
	}
	for _, n := range names {
		base := n
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(n, suf); ok && exposed[b] {
				base = b
			}
		}
		if !exposed[base] {
			t.Errorf("alerts.yml uses %s, which is not exposed", n)
		}
	}
}
