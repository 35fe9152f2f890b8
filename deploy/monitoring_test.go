package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"

	"github.com/kefuhq/kefu/internal/testenv"
)

const (
	rulesFile     = "prometheus/kefu.rules.yml"
	rulesTestFile = "prometheus/kefu.rules.test.yml"
	dashboardFile = "grafana/kefu.json"
)

// promtool returns the path of Prometheus's promtool (Debian's prometheus
// package; .ci/run installs it), skipping the test without it unless
// KEFU_REQUIRE_SERVICES=1.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if testenv.Required() {
			t.Fatal("promtool is not installed (apt-get install prometheus), and KEFU_REQUIRE_SERVICES=1 requires it")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	return p
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// TestAlertRules: promtool accepts the alerting rules and their unit tests
// pass (each alert the tests cover fires when, and only when, it should).
func TestAlertRules(t *testing.T) {
	p := promtool(t)
	run(t, ".", p, "check", "rules", rulesFile)
	run(t, filepath.Dir(rulesTestFile), p, "test", "rules", filepath.Base(rulesTestFile))
}

// dashboardExprs returns every PromQL expression of the dashboard (panels,
// panels in rows, and the template variables' queries' metrics), keyed by
// where it is, and checks the panels' structure on the way.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: no uid, title or panels", dashboardFile)
	}
	exprs := map[string]string{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource is not the dashboard's ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs[fmt.Sprintf("panel %d (%s) %s", p.ID, p.Title, q.RefID)] = q.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// label_values(SELECTOR, label): the selector is PromQL.
		sel, ok := strings.CutPrefix(v.Definition, "label_values(")
		i := strings.LastIndex(sel, ",")
		if !ok || i < 0 {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		exprs["variable "+v.Name] = sel[:i]
	}
	return exprs
}

// TestDashboardQueries: every query of the Grafana dashboard is PromQL that
// promtool accepts, with Grafana's variables given values, as it would
// a recording rule.
func TestDashboardQueries(t *testing.T) {
	p := promtool(t)
	exprs := dashboardExprs(t)
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".+")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, where := range slices.Sorted(func(yield func(string) bool) {
		for k := range exprs {
			if !yield(k) {
				return
			}
		}
	}) {
		e := grafana.Replace(exprs[where])
		if strings.Contains(e, "$") {
			t.Errorf("%s: a variable the test does not know: %s", where, e)
		}
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", len(rules)), Expr: e})
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, ".", p, "check", "rules", file)
}

var metricName = regexp.MustCompile(`\b((?:kefu|process|go)_[a-z0-9_]+)\b`)

// TestMonitoringMetricsExist: every metric the alerts and the dashboard
// read is one kefu exports: kefu's own are declared in its sources (a
// histogram's _bucket, _sum and _count included), the process and Go
// runtime ones come from the collectors every node registers.
func TestMonitoringMetricsExist(t *testing.T) {
	exported := map[string]bool{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}
	declared := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(kefu_[a-z0-9_]+)"`)
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && d.Name() != "..") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range declared.FindAllStringSubmatch(string(src), -1) {
			exported[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !exported["kefu_outbox_depth"] || !exported["process_open_fds"] {
		t.Fatalf("the metrics kefu exports were not found: %v", exported)
	}

	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	uses := map[string]string{"alerting rules": string(rules)}
	for where, e := range dashboardExprs(t) {
		uses["dashboard "+where] = e
	}
	for where, text := range uses {
		for _, m := range metricName.FindAllString(text, -1) {
			name := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(m, suffix); ok && exported[base] {
					name = base
				}
			}
			if !exported[name] {
				t.Errorf("%s: %s is not a metric kefu exports", where, m)
			}
		}
	}
}
