package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Section types registered by the tests, standing in for the channel and
// pusher packages.

// webSection stands in for channels/web.
type webSection struct {
	AllowedOrigins []string `yaml:"allowed_origins"` // origins allowed to embed the widget
}

func (c *webSection) Validate() error {
	var errs []error
	for i, o := range c.AllowedOrigins {
		errs = append(errs, config.URL(fmt.Sprintf("allowed_origins[%d]", i), o))
	}
	return errors.Join(errs...)
}

// chatSection has a secret, an enum, a URL, a nested map and a list of
// items with defaults of their own.
type chatSection struct {
	Token     string              `yaml:"token"`     // bot token
	Mode      string              `yaml:"mode"`      // webhook | polling
	APIBase   string              `yaml:"api_base"`  // provider endpoint
	Timeout   time.Duration       `yaml:"timeout"`   // request timeout
	Templates map[string]template `yaml:"templates"` // message templates by purpose
	Replies   []reply             `yaml:"replies"`   // canned replies
	Fail      bool                `yaml:"fail"`      // makes Validate return a plain error
}

type template struct {
	Name     string `yaml:"name"`     // provider template name
	Language string `yaml:"language"` // template language
}

type reply struct {
	Text     string `yaml:"text"`     // reply text
	Priority int    `yaml:"priority"` // sort order; default 10
}

func (r *reply) SetDefaults() { r.Priority = 10 }

func (c *chatSection) Validate() error {
	errs := []error{
		config.Required("token", c.Token),
		config.OneOf("mode", c.Mode, "webhook", "polling"),
		config.URL("api_base", c.APIBase),
	}
	for k, t := range c.Templates {
		if t.Name == "" {
			errs = append(errs, config.Prefix("templates."+k, config.Errorf("name", "required")))
		}
	}
	if c.Fail {
		errs = append(errs, fmt.Errorf("wrapped: %w", errors.New("cannot reach the provider")))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testchat: %w", err) // wrapping a joined error is allowed
	}
	return nil
}

// pushSection stands in for push/apns.
type pushSection struct {
	KeyFile       string        `yaml:"key_file"`       // .p8 key
	FallbackAfter time.Duration `yaml:"fallback_after"` // push when not acked within this
}

func (c *pushSection) Validate() error { return config.Required("key_file", c.KeyFile) }

func init() {
	config.RegisterChannel("web", func() config.Section { return &webSection{} })
	config.RegisterChannel("testchat", func() config.Section {
		return &chatSection{Mode: "webhook", APIBase: "https://chat.example", Timeout: 10 * time.Second}
	})
	config.RegisterPusher("testpush", func() config.Section { return &pushSection{FallbackAfter: 5 * time.Second} })
}

// testEnv is the environment the golden files are parsed with.
var testEnv = map[string]string{
	"HOSTNAME":       "node-a",
	"CHAT_TOKEN":     "123:secret",
	"EMPTY":          "",
	"MAX_OPEN":       "12",
	"ALICE_PASSWORD": "alice-s3cret",
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// TestGolden parses testdata/good/*.yaml, whose golden is the decoded
// config as JSON, and testdata/bad/*.yaml, whose golden is the exact error.
func TestGolden(t *testing.T) {
	for _, dir := range []string{"good", "bad"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no files in testdata/%s: %v", dir, err)
		}
		for _, file := range files {
			name := filepath.Base(file)
			t.Run(dir+"/"+strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := config.Parse(name, data, lookup(testEnv))
				var got []byte
				switch {
				case dir == "good" && err != nil:
					t.Fatalf("unexpected error:\n%v", err)
				case dir == "good":
					got = render(t, cfg)
				case err == nil:
					t.Fatal("parsed without error")
				default:
					var errs *config.Errors
					if !errors.As(err, &errs) {
						t.Fatalf("error is %T, not *config.Errors: %v", err, err)
					}
					got = []byte(err.Error() + "\n")
				}
				compareGolden(t, strings.TrimSuffix(file, ".yaml")+".golden", got)
			})
		}
	}
}

func compareGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("mismatch with %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

// render returns cfg as indented JSON with yaml key names and durations
// written like "168h0m0s", so goldens read like the config they came from.
func render(t *testing.T, cfg *config.Config) []byte {
	t.Helper()
	b, err := json.MarshalIndent(plain(reflect.ValueOf(cfg)), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func plain(v reflect.Value) any {
	if v.Type() == reflect.TypeFor[time.Duration]() {
		return time.Duration(v.Int()).String()
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return plain(v.Elem())
	case reflect.Struct:
		m := map[string]any{}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			m[name] = plain(v.Field(i))
		}
		return m
	case reflect.Slice:
		if v.IsNil() {
			return nil
		}
		s := make([]any, v.Len())
		for i := range s {
			s[i] = plain(v.Index(i))
		}
		return s
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		m := map[string]any{}
		for _, k := range v.MapKeys() {
			m[k.String()] = plain(v.MapIndex(k))
		}
		return m
	}
	return v.Interface()
}

func TestDefault(t *testing.T) {
	t.Setenv("HOSTNAME", "")
	cfg := config.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.NodeID != "kefu-1" {
		t.Errorf("node_id = %q, want kefu-1", cfg.NodeID)
	}
	web := cfg.Channels["web"]
	if web == nil || !web.Enabled || web.Type != "web" {
		t.Fatalf("channels.web = %+v, want the web channel enabled", web)
	}
	if _, ok := web.Config.(*webSection); !ok {
		t.Errorf("web config is %T, want *webSection", web.Config)
	}
	t.Setenv("HOSTNAME", "box-7")
	if got := config.Default().NodeID; got != "box-7" {
		t.Errorf("node_id = %q with HOSTNAME=box-7", got)
	}
}

func TestEmptyFileKeepsDefaultsWithoutChannels(t *testing.T) {
	cfg, err := config.Parse("empty.yaml", nil, lookup(map[string]string{"HOSTNAME": "h"}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.NodeID = "h"
	want.Channels = map[string]*config.ChannelInstance{}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kefu.yaml")
	t.Setenv("KEFU_TEST_ADDR", ":9999")
	if err := os.WriteFile(path, []byte("server:\n  addr: ${KEFU_TEST_ADDR}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Addr != ":9999" {
		t.Errorf("addr = %q", cfg.Server.Addr)
	}
	if _, err := config.Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want os.ErrNotExist", err)
	}
}

func TestEnabledChannels(t *testing.T) {
	src := `
channels:
  zeta: {type: testchat, enabled: true, token: t}
  alpha: {type: testchat, enabled: true, token: t}
  off: {type: testchat}
push:
  testpush: {enabled: true, key_file: k.p8}
`
	cfg, err := config.Parse("c.yaml", []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cfg.EnabledChannels() {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "alpha,zeta" {
		t.Errorf("EnabledChannels = %s, want alpha,zeta", got)
	}
	if ps := cfg.EnabledPushers(); len(ps) != 1 || ps[0].Type != "testpush" {
		t.Errorf("EnabledPushers = %+v", ps)
	}
	if ci := cfg.Channels["alpha"]; ci.Line != 4 {
		t.Errorf("alpha line = %d, want 4", ci.Line)
	}
}

func TestRegistry(t *testing.T) {
	if got := strings.Join(config.ChannelTypes(), ","); got != "testchat,web" {
		t.Errorf("ChannelTypes = %s", got)
	}
	if got := strings.Join(config.PusherTypes(), ","); got != "testpush" {
		t.Errorf("PusherTypes = %s", got)
	}
	for _, tc := range []struct {
		name string
		typ  string
		fn   func() config.Section
	}{
		{"duplicate", "web", func() config.Section { return &webSection{} }},
		{"bad name", "Web", func() config.Section { return &webSection{} }},
		{"nil constructor", "nilctor", nil},
		{"not a struct pointer", "notptr", func() config.Section { return sectionFunc(nil) }},
		{"claims type key", "typekey", func() config.Section { return &typeKeySection{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("RegisterChannel did not panic")
				}
			}()
			config.RegisterChannel(tc.typ, tc.fn)
		})
	}
}

type sectionFunc func() error

func (f sectionFunc) Validate() error { return f() }

type typeKeySection struct {
	Type string `yaml:"type"` // clashes with the common key
}

func (*typeKeySection) Validate() error { return nil }

func TestErrorsFormat(t *testing.T) {
	errs := &config.Errors{
		{File: "k.yaml", Line: 3, Key: "store.driver", Msg: "bad"},
		{File: "k.yaml", Key: "node_id", Msg: "required"},
		{File: "k.yaml", Line: 1, Msg: "did not find expected key"},
		{Key: "x", Msg: "no file"},
	}
	want := "k.yaml:3: store.driver: bad\nk.yaml: node_id: required\nk.yaml:1: did not find expected key\nx: no file"
	if got := errs.Error(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestPrefix(t *testing.T) {
	err := fmt.Errorf("ctx: %w", errors.Join(
		config.Required("token", ""),
		nil,
		fmt.Errorf("deep: %w", config.Errorf("[2]", "bad item")),
		errors.New("plain"),
		config.Prefix("templates.a", config.Errorf("name", "required")),
	))
	got := config.Prefix("channels.tg", err).Error()
	want := "channels.tg.token: required when the channel is enabled\n" +
		"channels.tg[2]: bad item\n" +
		"channels.tg: plain\n" + // the wrapping around a joined error is dropped; the key says where
		"channels.tg.templates.a.name: required"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if config.Prefix("x", nil) != nil {
		t.Error("Prefix of nil is not nil")
	}
}

func TestHelpers(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"required ok", config.Required("k", "v"), ""},
		{"required empty", config.Required("k", ""), "k: required when the channel is enabled"},
		{"oneof ok", config.OneOf("k", "b", "a", "b"), ""},
		{"oneof bad", config.OneOf("k", "c", "a", "b"), `k: must be one of a, b; got "c"`},
		{"url ok", config.URL("k", "https://x.example/api/"), ""},
		{"url empty", config.URL("k", ""), "k: required: an http:// or https:// URL"},
		{"url relative", config.URL("k", "/api"), `k: must be an absolute http:// or https:// URL; got "/api"`},
		{"url scheme", config.URL("k", "ftp://x"), `k: must be an absolute http:// or https:// URL; got "ftp://x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if tc.err != nil {
				got = tc.err.Error()
				var fe *config.FieldError
				if !errors.As(tc.err, &fe) {
					t.Errorf("%T is not a *FieldError", tc.err)
				}
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTrustedPrefixes(t *testing.T) {
	s := config.Server{TrustedProxies: []string{"10.0.0.0/8", "192.168.1.7", "::1", "172.16.5.4/12"}}
	ps, err := s.TrustedPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	want := "[10.0.0.0/8 192.168.1.7/32 ::1/128 172.16.0.0/12]"
	if got := fmt.Sprint(ps); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, glob := range []string{"testdata/good/*.yaml", "testdata/bad/*.yaml", "../kefu.example.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte("a: &a [*a, *a]\nb: &b [*a, *a]\nserver: {<<: *b}\n"))
	f.Add([]byte("channels: {x: &x {type: testchat, <<: *x}}"))
	f.Add([]byte("node_id: ${A:-${B}}$"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse("fuzz.yaml", data, lookup(testEnv))
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var errs *config.Errors
		if errors.As(err, &errs) && len(*errs) == 0 {
			t.Fatal("empty *Errors")
		}
	})
}

// TestHostileInput checks that alias and merge bombs and self-referencing
// anchors end with an error instead of expanding without bound.
func TestHostileInput(t *testing.T) {
	bomb := func(format string) string {
		var b strings.Builder
		b.WriteString("x0: &x0 {zzz: 1}\n")
		for i := 1; i <= 9; i++ {
			fmt.Fprintf(&b, format+"\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*x%d, ", i-1), 9), ", "))
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, src, want string
	}{
		{"alias bomb", bomb("x%d: &x%d [%s]") + "agents: *x9\n", "agents[8]: expected a mapping, got a list"},
		{"merge bomb", bomb("x%d: &x%d {<<: [%s]}") + "store: *x9\n", "too many problems"},
		{"merge bomb in a channel", bomb("x%d: &x%d {<<: [%s]}") + "channels: {web: *x9}\n", "too many problems"},
		{"self merge", "a: &a {<<: [*a, *a]}\nserver: *a\n", "nested too deeply"},
		{"self list", "a: &a [*a]\nagents: *a\n", "expected a mapping, got a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("x.yaml", []byte(tc.src), nil)
			var errs *config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("err = %v, want *config.Errors", err)
			}
			if len(*errs) > 1001 {
				t.Errorf("%d errors, want at most 1001", len(*errs))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not mention %q:\n%.2000s", tc.want, err)
			}
		})
	}
}

// TestRedact: a connection string in a message shows no password, in
// either form PostgreSQL takes.
func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://kefu:S3cret@db:5432/kefu":           "postgres://kefu:xxxxx@db:5432/kefu",
		"host=db user=kefu password=S3cret dbname=kefu": "host=db user=kefu password=xxxxx dbname=kefu",
		"host=db PASSWORD='a b\\' c' dbname=kefu":       "host=db PASSWORD=xxxxx dbname=kefu",
		"data/kefu.db":             "data/kefu.db",
		"redis://127.0.0.1:6379/0": "redis://127.0.0.1:6379/0",
	} {
		if got := config.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	_, err := config.Parse("t.yaml", []byte("store: {driver: postgres, dsn: \"host=db password=S3cretPassw0rd\"}\n"),
		func(string) (string, bool) { return "", false })
	if err == nil || strings.Contains(err.Error(), "S3cretPassw0rd") {
		t.Errorf("config error shows the password: %v", err)
	}
}
