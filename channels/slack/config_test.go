package slack_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/slack"
	"github.com/kefuhq/kefu/config"
)

func TestConfigValidate(t *testing.T) {
	good := slack.Config{BotToken: "xoxb-1-2-abc", SigningSecret: "s", Channel: "C0123456789", APIBase: slack.DefaultAPIBase}
	tests := []struct {
		name  string
		edit  func(*slack.Config)
		wants []string // substrings of the error; none: valid
	}{
		{"good", func(*slack.Config) {}, nil},
		{"private channel", func(c *slack.Config) { c.Channel = "G0123456" }, nil},
		{"socket mode without signing secret", func(c *slack.Config) { c.SigningSecret, c.AppToken = "", "xapp-1-A-1-x" }, nil},
		{"everything missing", func(c *slack.Config) { *c = slack.Config{} },
			[]string{"bot_token: required", "signing_secret: required", "channel: required", "api_base: required"}},
		{"user token", func(c *slack.Config) { c.BotToken = "xoxp-123" }, []string{"bot_token: must be a bot token"}},
		{"bad app token", func(c *slack.Config) { c.AppToken = "xoxb-1" }, []string{"app_token: must be an app-level token"}},
		{"channel name", func(c *slack.Config) { c.Channel = "#support" }, []string{"channel: must be a Slack channel ID"}},
		{"DM channel", func(c *slack.Config) { c.Channel = "D0123456789" }, []string{"channel: must be a Slack channel ID"}},
		{"bad api_base", func(c *slack.Config) { c.APIBase = "slack.com/api" }, []string{"api_base: must be an absolute"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "xoxp-123") {
				t.Error("a token was echoed in an error")
			}
		})
	}
}

func TestConfigFromYAML(t *testing.T) {
	yaml := `
channels:
  support-slack:
    type: slack
    enabled: true
    bot_token: xoxb-1-2-abc
    signing_secret: ${SLACK_SIGNING_SECRET:-abc}
    channel: C0123456789
`
	cfg, err := config.Parse("kefu.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	insts := cfg.EnabledChannels()
	if len(insts) != 1 {
		t.Fatalf("instances: %+v", insts)
	}
	c := insts[0].Config.(*slack.Config)
	if c.APIBase != slack.DefaultAPIBase || c.SigningSecret != "abc" {
		t.Fatalf("config = %+v", c)
	}
	bad := strings.Replace(yaml, "channel: C0123456789", "channel: support\n    chanel: x", 1)
	_, err = config.Parse("kefu.yaml", []byte(bad), func(string) (string, bool) { return "", false })
	if err == nil || !strings.Contains(err.Error(), "chanel") || !strings.Contains(err.Error(), "channel: must be a Slack channel ID") {
		t.Fatalf("errors: %v", err)
	}
	if _, err := channels.New(insts[0], channels.Deps{}); err == nil {
		t.Fatal("built without a core service")
	}
}

func TestRejectedTokenMakesItUnready(t *testing.T) {
	h := newHarness(t, options{})
	cfg := h.cfg
	cfg.BotToken = "xoxb-revoked"
	ch, err := slack.New("other", cfg, channels.Deps{Service: h.svc, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Check(context.Background()) != nil {
		t.Fatal("not ready before any call")
	}
	h.run(ch.Run) // auth.test is answered invalid_auth
	waitFor(t, "Check to fail", func() bool { return ch.Check(context.Background()) != nil })
	if err := ch.Check(context.Background()); !strings.Contains(err.Error(), "invalid_auth") {
		t.Fatalf("Check: %v", err)
	}
}
