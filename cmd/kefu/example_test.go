package main

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/config"
)

// TestExampleFile checks that kefu.example.yaml loads as is with no
// environment at all.
func TestExampleFile(t *testing.T) {
	const path = "../../kefu.example.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := func(string) (string, bool) { return "", false }
	cfg, err := config.Parse(path, data, env)
	if err != nil {
		t.Fatalf("example does not load:\n%v", err)
	}
	def := config.Default()
	if cfg.NodeID != "kefu-1" {
		t.Errorf("node_id = %q, want kefu-1", cfg.NodeID)
	}
	// The example documents the defaults: apart from what it sets on
	// purpose, it must decode to them.
	for _, c := range []struct {
		key       string
		got, want any
	}{
		{"store", cfg.Store, def.Store},
		{"media", cfg.Media, def.Media},
		{"bus", cfg.Bus, def.Bus},
		{"routing", cfg.Routing, def.Routing},
		{"log", cfg.Log, def.Log},
		{"server.addr", cfg.Server.Addr, def.Server.Addr},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %+v, want the default %+v", c.key, c.got, c.want)
		}
	}
	// No agent, so no password, is built in: the first start creates the
	// admin and prints its password.
	if len(cfg.Agents) != 0 {
		t.Errorf("agents = %+v, want none", cfg.Agents)
	}
}

// TestExampleDocumentsEveryChannel checks that every channel type this
// binary ships has a section in kefu.example.yaml, disabled, so that an
// operator finds every key there.
func TestExampleDocumentsEveryChannel(t *testing.T) {
	cfg, err := config.Load("../../kefu.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for _, inst := range cfg.Channels {
		types[inst.Type] = true
		if inst.Enabled && inst.Type != "web" {
			t.Errorf("channels.%s is enabled in the example; only web should be", inst.Name)
		}
	}
	var missing []string
	for _, typ := range channels.Types() {
		if !types[typ] {
			missing = append(missing, typ)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("kefu.example.yaml has no section for channel types %s", strings.Join(missing, ", "))
	}
}

// TestExampleDocumentsEveryPusher checks that every pusher type this binary
// ships has a disabled section in kefu.example.yaml.
func TestExampleDocumentsEveryPusher(t *testing.T) {
	cfg, err := config.Load("../../kefu.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range config.PusherTypes() {
		pi, ok := cfg.Push[typ]
		switch {
		case !ok:
			t.Errorf("kefu.example.yaml has no push.%s section", typ)
		case pi.Enabled:
			t.Errorf("push.%s is enabled in the example", typ)
		}
	}
	if len(config.PusherTypes()) == 0 {
		t.Error("no pusher type is registered: is push/apns linked in?")
	}
}

// TestConfigReferenceDocumentsEveryKey checks that docs/config.md has a
// row for every key of the shared sections (the channels' and pushers'
// keys are in their own pages and the example file).
func TestConfigReferenceDocumentsEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "channels" || name == "push" {
				continue
			}
			key := prefix + name
			switch ft := f.Type; {
			case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]():
				walk(key+".", ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(key+"[].", ft.Elem())
			default:
				keys = append(keys, key)
			}
		}
	}
	walk("", reflect.TypeFor[config.Config]())
	if len(keys) < 20 {
		t.Fatalf("only %d keys found: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.Contains(string(doc), "| `"+k+"` |") {
			t.Errorf("docs/config.md has no row for %s", k)
		}
	}
}
