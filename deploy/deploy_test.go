// Package deploy_test checks deploy/ without a Docker engine or a cluster:
// the compose file and HAProxy config are parsed and checked for structure,
// the configs kefu loads there go through kefu's own strict config.Parse,
// and the Helm chart is rendered with helm's Go packages.
package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"github.com/kefuhq/kefu/config"

	// Channel types shipped in the binary register themselves, as in cmd/kefu.
	_ "github.com/kefuhq/kefu/channels/slack"
	_ "github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/web"
	_ "github.com/kefuhq/kefu/channels/webhook"
	_ "github.com/kefuhq/kefu/channels/wechat"
	_ "github.com/kefuhq/kefu/channels/wecom"
	_ "github.com/kefuhq/kefu/channels/whatsapp"
)

type obj = map[string]any

// get walks m along keys (map keys or list indexes as ints).
func get(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(obj)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func readYAML(t *testing.T, path string) obj {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m obj
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// mapEnv is a lookupEnv over a map.
func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// parseKefu loads a kefu config with kefu's own loader, failing the test on
// any error (an unknown key among them).
func parseKefu(t *testing.T, name string, data []byte, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(name, data, mapEnv(env))
	if err != nil {
		t.Fatalf("config.Parse(%s):\n%v", name, err)
	}
	return cfg
}

func webConfig(t *testing.T, cfg *config.Config) *web.Config {
	t.Helper()
	ch := cfg.Channels["web"]
	if ch == nil || !ch.Enabled {
		t.Fatal("no enabled web channel")
	}
	wc, ok := ch.Config.(*web.Config)
	if !ok {
		t.Fatalf("web channel config is %T", ch.Config)
	}
	return wc
}

// composeVar matches docker compose's ${NAME}, ${NAME:-x}, ${NAME:?x}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}`)

// composeEnv resolves a service's environment: as docker compose would with
// .env.example as deploy/.env.
func composeEnv(t *testing.T, svc obj, dotenv map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	m, ok := svc["environment"].(obj)
	if !ok {
		t.Fatalf("environment is %T, want a map", svc["environment"])
	}
	for k, v := range m {
		env[k] = composeVar.ReplaceAllStringFunc(str(v), func(ref string) string {
			return dotenv[composeVar.FindStringSubmatch(ref)[1]]
		})
	}
	return env
}

func readDotenv(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf(".env.example: bad line %q", line)
		}
		env[k] = v
	}
	return env
}

// kefuServices returns the compose services built from deploy/Dockerfile.
func kefuServices(t *testing.T, compose obj) map[string]obj {
	t.Helper()
	services, _ := compose["services"].(obj)
	out := map[string]obj{}
	for name, s := range services {
		svc := s.(obj)
		if str(get(svc, "build", "dockerfile")) == "deploy/Dockerfile" {
			out[name] = svc
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	compose := readYAML(t, "docker-compose.yml")
	dotenv := readDotenv(t)
	services, _ := compose["services"].(obj)

	// Three kefu nodes, distinct node ids, the one cluster config, media in PostgreSQL.
	nodes := kefuServices(t, compose)
	if len(nodes) != 3 {
		t.Fatalf("%d kefu services, want 3", len(nodes))
	}
	clusterData, err := os.ReadFile("kefu.cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for name, svc := range nodes {
		env := composeEnv(t, svc, dotenv)
		vols := fmt.Sprint(svc["volumes"])
		if !strings.Contains(vols, "./kefu.cluster.yaml:/etc/kefu/kefu.yaml") {
			t.Errorf("%s: kefu.cluster.yaml not mounted at /etc/kefu/kefu.yaml: %s", name, vols)
		}
		if env["KEFU_CONFIG"] != "/etc/kefu/kefu.yaml" {
			t.Errorf("%s: KEFU_CONFIG=%q", name, env["KEFU_CONFIG"])
		}
		// The node loads the mounted config with its own environment.
		cfg := parseKefu(t, name+":kefu.cluster.yaml", clusterData, env)
		if cfg.NodeID == "" {
			t.Errorf("%s: empty node_id", name)
		}
		if other, dup := ids[cfg.NodeID]; dup {
			t.Errorf("%s and %s share node_id %q", name, other, cfg.NodeID)
		}
		ids[cfg.NodeID] = name
		if cfg.Media.Driver != "postgres" || cfg.Store.Driver != "postgres" {
			t.Errorf("%s: media.driver %q store.driver %q: a file one node stored must be served by the others", name, cfg.Media.Driver, cfg.Store.Driver)
		}
		if !strings.Contains(cfg.Store.DSN, ":"+dotenv["POSTGRES_PASSWORD"]+"@") {
			t.Errorf("%s: store.dsn %q does not carry POSTGRES_PASSWORD", name, cfg.Store.DSN)
		}
		if !strings.Contains(cfg.Bus.URL, ":"+dotenv["REDIS_PASSWORD"]+"@") {
			t.Errorf("%s: bus.url %q does not carry REDIS_PASSWORD", name, cfg.Bus.URL)
		}
		deps := fmt.Sprint(svc["depends_on"])
		if !strings.Contains(deps, "postgres") || !strings.Contains(deps, "redis") {
			t.Errorf("%s: depends_on %s", name, deps)
		}
	}

	// Redis: AOF on, fsync every second, no eviction.
	redis, _ := services["redis"].(obj)
	if redis == nil {
		t.Fatal("no redis service")
	}
	cmd := strings.Join(strings.Fields(fmt.Sprint(redis["command"])), " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	if !strings.Contains(fmt.Sprint(redis["volumes"]), ":/data") {
		t.Error("redis /data (the AOF) is not on a volume")
	}
	if _, ok := services["postgres"]; !ok {
		t.Error("no postgres service")
	}

	// The trusted proxy CIDR is the compose network's subnet.
	subnet := str(get(compose, "networks", "kefu", "ipam", "config", 0, "subnet"))
	cfg := parseKefu(t, "kefu.cluster.yaml", clusterData, map[string]string{"KEFU_NODE_ID": "x"})
	if !slices.Contains(cfg.Server.TrustedProxies, subnet) {
		t.Errorf("server.trusted_proxies %v does not hold the compose subnet %q", cfg.Server.TrustedProxies, subnet)
	}

	// The load balancer: HAProxy with haproxy.cfg, every node behind it.
	lb, _ := services["lb"].(obj)
	if lb == nil {
		t.Fatal("no lb service")
	}
	if !strings.Contains(fmt.Sprint(lb["volumes"]), "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg") {
		t.Errorf("lb does not mount haproxy.cfg: %v", lb["volumes"])
	}
	checkHAProxy(t, slices.Sorted(maps.Keys(nodes)), webConfig(t, cfg))
}

// haproxyTimeout parses an HAProxy time ("75s", "1h", "500ms", "30" = ms).
func haproxyTimeout(t *testing.T, s string) time.Duration {
	t.Helper()
	if strings.Trim(s, "0123456789") == "" {
		s += "ms"
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("haproxy time %q: %v", s, err)
	}
	return d
}

func checkHAProxy(t *testing.T, nodes []string, wc *web.Config) {
	data, err := os.ReadFile("haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	var (
		section   string
		timeouts  = map[string]time.Duration{}
		servers   []string
		modeHTTP  bool
		httpchk   bool
		readyz    bool
		wsBackend bool
	)
	for line := range strings.Lines(string(data)) {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			section = f[0]
			continue
		}
		switch {
		case f[0] == "mode" && f[1] == "http" && section == "defaults":
			modeHTTP = true
		case f[0] == "timeout" && section == "defaults":
			timeouts[f[1]] = haproxyTimeout(t, f[2])
		case f[0] == "server" && section == "backend":
			servers = append(servers, f[2])
		case f[0] == "option" && f[1] == "httpchk":
			httpchk = true
		case f[0] == "http-check" && slices.Contains(f, "/readyz"):
			readyz = true
		case f[0] == "use_backend" && slices.Contains(f, "is_websocket"):
			wsBackend = true
		case f[0] == "cookie" || strings.HasPrefix(f[0], "stick") || f[0] == "balance" && f[1] == "source":
			t.Errorf("haproxy.cfg: sticky sessions (%s): kefu needs none", strings.TrimSpace(line))
		case f[0] == "option" && (f[1] == "httpclose" || f[1] == "http-server-close"):
			t.Errorf("haproxy.cfg: %s would break WebSocket tunnels' keep-alive", f[1])
		}
	}
	// HAProxy in HTTP mode forwards Connection: Upgrade / Upgrade: websocket
	// and tunnels the connection after the 101; timeout tunnel then applies.
	if !modeHTTP || !wsBackend {
		t.Errorf("haproxy.cfg: mode http %v, WebSocket upgrade routed %v", modeHTTP, wsBackend)
	}
	if !httpchk || !readyz {
		t.Errorf("haproxy.cfg: health check on /readyz: option httpchk %v, GET /readyz %v", httpchk, readyz)
	}
	var want []string
	for _, n := range nodes {
		want = append(want, n+":8080")
	}
	slices.Sort(servers)
	if !slices.Equal(servers, want) {
		t.Errorf("haproxy.cfg servers %v, want %v", servers, want)
	}
	longest := max(wc.LongPollTimeout, wc.PingInterval)
	for _, k := range []string{"client", "server", "tunnel"} {
		if timeouts[k] <= longest {
			t.Errorf("haproxy.cfg: timeout %s %v, want > long_poll_timeout %v and ping_interval %v", k, timeouts[k], wc.LongPollTimeout, wc.PingInterval)
		}
	}
}

func TestClusterConfig(t *testing.T) {
	data, err := os.ReadFile("kefu.cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEFU_NODE_ID": "kefu-2", "KEFU_DB_PASSWORD": "pw", "REDIS_PASSWORD": "rpw"}
	cfg := parseKefu(t, "kefu.cluster.yaml", data, env)
	if cfg.NodeID != "kefu-2" || cfg.Store.Driver != "postgres" || cfg.Bus.Driver != "redis" {
		t.Errorf("node_id %q store %q bus %q, want kefu-2 postgres redis", cfg.NodeID, cfg.Store.Driver, cfg.Bus.Driver)
	}
	if cfg.Store.DSN != "postgres://kefu:pw@postgres:5432/kefu?sslmode=disable" || cfg.Bus.URL != "redis://:rpw@redis:6379/0" {
		t.Errorf("dsn %q url %q", cfg.Store.DSN, cfg.Bus.URL)
	}
	// Secrets left unset expand to "" (the file uses ${…:-}), but a node
	// without its id must not start under a shared default.
	if _, err := config.Parse("kefu.cluster.yaml", data, mapEnv(map[string]string{})); err == nil || !strings.Contains(err.Error(), "KEFU_NODE_ID") {
		t.Errorf("without KEFU_NODE_ID: %v, want an error naming it", err)
	}

	// The single-node config baked into the image loads with no environment.
	img, err := os.ReadFile("kefu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	one := parseKefu(t, "kefu.yaml", img, nil)
	if one.Store.Driver != "sqlite" || !strings.HasPrefix(one.Store.DSN, "/var/lib/kefu/") || !strings.HasPrefix(one.Media.Dir, "/var/lib/kefu/") {
		t.Errorf("image config: store %q %q media %q, want SQLite and media under /var/lib/kefu", one.Store.Driver, one.Store.DSN, one.Media.Dir)
	}
}

// TestDockerfile checks the build's promises that a text read can check.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, want := range []string{
		"CGO_ENABLED=0 go build -trimpath",
		`-ldflags "-s -w -X main.version=`,
		"FROM gcr.io/distroless/static",
		"ENV KEFU_CONFIG=/etc/kefu/kefu.yaml",
		"COPY deploy/kefu.yaml /etc/kefu/kefu.yaml",
		`VOLUME ["/var/lib/kefu"]`,
		"USER 65532",
		"EXPOSE 8080",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*HEALTHCHECK`).MatchString(s) {
		t.Error("Dockerfile has a HEALTHCHECK; orchestrators probe /healthz and /readyz")
	}
	if !regexp.MustCompile(`(?m)^FROM golang:\$\{GO_VERSION\} AS build`).MatchString(s) {
		t.Error("Dockerfile: no golang build stage")
	}
}

// renderChart renders deploy/helm/kefu with overrides, as `helm template` would.
func renderChart(t *testing.T, overrides obj) map[string][]obj {
	t.Helper()
	ch, err := loader.Load("helm/kefu")
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Validate(); err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, overrides,
		chartutil.ReleaseOptions{Name: "support", Namespace: "kefu", IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string][]obj{}
	for name, content := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		dec := yaml.NewDecoder(strings.NewReader(content))
		for {
			var doc obj
			err := dec.Decode(&doc)
			if err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v\n%s", name, err, content)
			}
			if doc == nil {
				continue
			}
			kind := str(doc["kind"])
			byKind[kind] = append(byKind[kind], doc)
		}
	}
	return byKind
}

func one(t *testing.T, byKind map[string][]obj, kind string) obj {
	t.Helper()
	if len(byKind[kind]) != 1 {
		t.Fatalf("%d %s manifests, want 1", len(byKind[kind]), kind)
	}
	return byKind[kind][0]
}

func TestHelmChart(t *testing.T) {
	m := renderChart(t, nil)

	// Deployment: probes, node id from the pod name, config and secrets.
	dep := one(t, m, "Deployment")
	if r := get(dep, "spec", "replicas"); str(r) != "3" {
		t.Errorf("replicas %v, want 3", r)
	}
	c := get(dep, "spec", "template", "spec", "containers", 0).(obj)
	if p := str(get(c, "readinessProbe", "httpGet", "path")); p != "/readyz" {
		t.Errorf("readiness probe %q, want /readyz", p)
	}
	if p := str(get(c, "livenessProbe", "httpGet", "path")); p != "/healthz" {
		t.Errorf("liveness probe %q, want /healthz", p)
	}
	if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
		t.Error("no resources")
	}
	env := map[string]obj{}
	for _, e := range get(c, "env").([]any) {
		env[str(e.(obj)["name"])] = e.(obj)
	}
	if p := str(get(env["KEFU_NODE_ID"], "valueFrom", "fieldRef", "fieldPath")); p != "metadata.name" {
		t.Errorf("KEFU_NODE_ID from %q, want the pod name", p)
	}
	if v := str(get(env["KEFU_CONFIG"], "value")); v != "/etc/kefu/kefu.yaml" {
		t.Errorf("KEFU_CONFIG %q", v)
	}
	if r := str(get(env["GOMEMLIMIT"], "valueFrom", "resourceFieldRef", "resource")); r != "limits.memory" {
		t.Errorf("GOMEMLIMIT from %q, want the container's memory limit", r)
	}
	secret := one(t, m, "Secret")
	secretName := str(get(secret, "metadata", "name"))
	if n := str(get(c, "envFrom", 0, "secretRef", "name")); n != secretName {
		t.Errorf("envFrom secret %q, want %q", n, secretName)
	}
	cm := one(t, m, "ConfigMap")
	cmName := str(get(cm, "metadata", "name"))
	var mountedConfig bool
	for _, v := range get(dep, "spec", "template", "spec", "volumes").([]any) {
		if str(get(v, "configMap", "name")) == cmName {
			for _, vm := range get(c, "volumeMounts").([]any) {
				if str(get(vm, "name")) == str(get(v, "name")) && str(get(vm, "mountPath")) == "/etc/kefu" {
					mountedConfig = true
				}
			}
		}
	}
	if !mountedConfig {
		t.Error("the ConfigMap is not mounted at /etc/kefu")
	}

	// The ConfigMap's kefu.yaml loads in kefu, with the Secret's keys and the pod's name as environment.
	podEnv := map[string]string{"KEFU_NODE_ID": "support-kefu-6d4f9-abcde"}
	for k, v := range get(secret, "stringData").(obj) {
		podEnv[k] = str(v)
	}
	kefuYAML := str(get(cm, "data", "kefu.yaml"))
	cfg := parseKefu(t, "ConfigMap kefu.yaml", []byte(kefuYAML), podEnv)
	if cfg.NodeID != podEnv["KEFU_NODE_ID"] || cfg.Store.Driver != "postgres" || cfg.Bus.Driver != "redis" || cfg.Media.Driver != "postgres" {
		t.Errorf("chart config: node_id %q store %q bus %q media %q", cfg.NodeID, cfg.Store.Driver, cfg.Bus.Driver, cfg.Media.Driver)
	}
	// Media in PostgreSQL: no media volume, and no warning about one.
	if vols := fmt.Sprint(get(dep, "spec", "template", "spec", "volumes")); strings.Contains(vols, "name:media") {
		t.Errorf("media volume mounted although media.driver is postgres: %s", vols)
	}
	wc := webConfig(t, cfg)

	// Service: no session affinity.
	svc := one(t, m, "Service")
	if a := str(get(svc, "spec", "sessionAffinity")); a != "" && a != "None" {
		t.Errorf("service sessionAffinity %q", a)
	}

	// Ingress: to the Service, with ingress-nginx timeouts longer than kefu's long polls and pings.
	ing := one(t, m, "Ingress")
	if n := str(get(ing, "spec", "rules", 0, "http", "paths", 0, "backend", "service", "name")); n != str(get(svc, "metadata", "name")) {
		t.Errorf("ingress backend %q", n)
	}
	ann, _ := get(ing, "metadata", "annotations").(obj)
	for _, k := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
		secs, err := time.ParseDuration(str(ann[k]) + "s")
		if err != nil || secs <= max(wc.LongPollTimeout, wc.PingInterval) {
			t.Errorf("ingress %s = %q, want seconds > %v", k, ann[k], max(wc.LongPollTimeout, wc.PingInterval))
		}
	}
	for k := range ann {
		if strings.Contains(k, "affinity") {
			t.Errorf("ingress annotation %s: kefu needs no sticky sessions", k)
		}
	}

	// PodDisruptionBudget selecting the Deployment's pods.
	pdb := one(t, m, "PodDisruptionBudget")
	if fmt.Sprint(get(pdb, "spec", "selector", "matchLabels")) != fmt.Sprint(get(dep, "spec", "selector", "matchLabels")) {
		t.Errorf("PDB selector %v, Deployment selector %v", get(pdb, "spec", "selector", "matchLabels"), get(dep, "spec", "selector", "matchLabels"))
	}
}

// TestHelmChartOptions renders the chart's other shapes: an existing Secret,
// a media claim, NATS, no ingress, no PDB.
func TestHelmChartOptions(t *testing.T) {
	m := renderChart(t, obj{
		"existingSecret":      "kefu-prod",
		"media":               obj{"persistence": obj{"existingClaim": "kefu-media"}},
		"ingress":             obj{"enabled": false},
		"podDisruptionBudget": obj{"enabled": false},
		"config": obj{"bus": obj{"driver": "nats", "url": "nats://nats:4222"},
			"media": obj{"driver": "local"}},
	})
	for _, kind := range []string{"Secret", "Ingress", "PodDisruptionBudget"} {
		if len(m[kind]) != 0 {
			t.Errorf("%s rendered although disabled", kind)
		}
	}
	dep := one(t, m, "Deployment")
	c := get(dep, "spec", "template", "spec", "containers", 0)
	if n := str(get(c, "envFrom", 0, "secretRef", "name")); n != "kefu-prod" {
		t.Errorf("envFrom secret %q, want kefu-prod", n)
	}
	if !strings.Contains(fmt.Sprint(get(dep, "spec", "template", "spec", "volumes")), "claimName:kefu-media") {
		t.Errorf("media claim not used: %v", get(dep, "spec", "template", "spec", "volumes"))
	}
	cm := one(t, m, "ConfigMap")
	cfg := parseKefu(t, "ConfigMap kefu.yaml", []byte(str(get(cm, "data", "kefu.yaml"))),
		map[string]string{"KEFU_NODE_ID": "p", "KEFU_DB_PASSWORD": "", "REDIS_PASSWORD": ""})
	if cfg.Bus.Driver != "nats" || cfg.Bus.URL != "nats://nats:4222" {
		t.Errorf("bus %q %q", cfg.Bus.Driver, cfg.Bus.URL)
	}
}

// A key kefu does not know, set through the chart's values, is caught by the
// same check that guards the defaults.
func TestHelmChartUnknownKeyCaught(t *testing.T) {
	m := renderChart(t, obj{"config": obj{"store": obj{"synchronous_commit": "on"}}})
	cm := one(t, m, "ConfigMap")
	_, err := config.Parse("kefu.yaml", []byte(str(get(cm, "data", "kefu.yaml"))),
		mapEnv(map[string]string{"KEFU_NODE_ID": "p", "KEFU_DB_PASSWORD": "", "REDIS_PASSWORD": ""}))
	if err == nil || !strings.Contains(err.Error(), "synchronous_commit") {
		t.Errorf("unknown key: %v, want an error naming it", err)
	}
}
