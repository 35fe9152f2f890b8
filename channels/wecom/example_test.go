package wecom_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/wecom"
	"github.com/kefuhq/kefu/config"
)

// TestExampleSection checks the wecom section of kefu.example.yaml:
// enabled with its secrets and agent_id set, it loads and documents the
// defaults.
func TestExampleSection(t *testing.T) {
	data, err := os.ReadFile("../../kefu.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	in := false
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "  wecom:"):
			in = true
		case in && !strings.HasPrefix(line, "    "):
			in = false
		}
		if in {
			block = append(block, line)
		}
	}
	if len(block) < 5 {
		t.Fatal("no wecom section in kefu.example.yaml")
	}
	section := strings.Join(block, "\n")
	section = strings.Replace(section, "enabled: false", "enabled: true", 1)
	section = strings.Replace(section, "agent_id: 0", "agent_id: 1000002", 1)
	yaml := "channels:\n" + section + "\n"
	env := map[string]string{"WECOM_CORP_ID": corpID, "WECOM_SECRET": secret, "WECOM_TOKEN": token, "WECOM_ENCODING_AES_KEY": aesKey}
	cfg, err := config.Parse("example", []byte(yaml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the example section does not load:\n%s\n%v", yaml, err)
	}
	inst := cfg.Channels["wecom"]
	if inst == nil || !inst.Enabled || inst.Type != wecom.Type {
		t.Fatalf("instance = %+v", inst)
	}
	got := inst.Config.(*wecom.Config)
	if got.CorpID != corpID || got.AgentID != agentID || got.Secret != secret || got.Token != token ||
		got.EncodingAESKey != aesKey || got.APIBase != wecom.DefaultAPIBase || len(got.ChannelNames) != 0 {
		t.Fatalf("example decodes to %+v", *got)
	}
}
