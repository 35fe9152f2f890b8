package wechat_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/wechat"
	"github.com/kefuhq/kefu/config"
)

// exampleSection returns the lines of kefu.example.yaml's section for the
// channel instance inst.
func exampleSection(t *testing.T, inst string) string {
	t.Helper()
	data, err := os.ReadFile("../../kefu.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "  "+inst+":"):
			in = true
		case in && !strings.HasPrefix(line, "    "):
			in = false
		}
		if in {
			block = append(block, line)
		}
	}
	if len(block) < 5 {
		t.Fatalf("no %s section in kefu.example.yaml", inst)
	}
	return strings.Join(block, "\n")
}

// TestExampleSection checks the wechat section of kefu.example.yaml:
// enabled with its secrets set, it loads and documents the defaults.
func TestExampleSection(t *testing.T) {
	yaml := "channels:\n" + strings.Replace(exampleSection(t, "wechat"), "enabled: false", "enabled: true", 1) + "\n"
	env := map[string]string{"WECHAT_APP_ID": appID, "WECHAT_APP_SECRET": appSecret, "WECHAT_TOKEN": token, "WECHAT_ENCODING_AES_KEY": aesKey}
	cfg, err := config.Parse("example", []byte(yaml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the example section does not load:\n%s\n%v", yaml, err)
	}
	inst := cfg.Channels["wechat"]
	if inst == nil || !inst.Enabled || inst.Type != wechat.Type {
		t.Fatalf("instance = %+v", inst)
	}
	got := inst.Config.(*wechat.Config)
	want := wechat.Config{AppID: appID, AppSecret: appSecret, Token: token, EncodingAESKey: aesKey, APIBase: wechat.DefaultAPIBase}
	if *got != want {
		t.Fatalf("example decodes to %+v, want %+v", *got, want)
	}
}
