package telegram_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/config"
)

// TestExampleSection checks the telegram section of kefu.example.yaml:
// enabled, it loads, and it documents the defaults.
func TestExampleSection(t *testing.T) {
	data, err := os.ReadFile("../../kefu.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "  telegram:"):
			in = true
		case in && !strings.HasPrefix(line, "    "):
			in = false
		}
		if in {
			block = append(block, line)
		}
	}
	if len(block) < 5 {
		t.Fatalf("no telegram section found in kefu.example.yaml: %q", block)
	}
	yaml := "channels:\n" + strings.Replace(strings.Join(block, "\n"), "enabled: false", "enabled: true", 1) + "\n"
	env := map[string]string{"TELEGRAM_BOT_TOKEN": token, "TELEGRAM_WEBHOOK_SECRET": secret}
	cfg, err := config.Parse("example", []byte(yaml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the example section does not load:\n%s\n%v", yaml, err)
	}
	inst := cfg.Channels["telegram"]
	if inst == nil || !inst.Enabled || inst.Type != telegram.Type {
		t.Fatalf("instance = %+v", inst)
	}
	want := telegram.DefaultConfig()
	want.Token, want.WebhookSecret = token, secret
	if got := inst.Config.(*telegram.Config); !reflect.DeepEqual(got, want) {
		t.Fatalf("example decodes to %+v, want the defaults %+v", got, want)
	}
}
