package telegram_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/telegram"
)

func TestConfigValidate(t *testing.T) {
	good := func() *telegram.Config {
		c := telegram.DefaultConfig()
		c.Token, c.WebhookSecret = token, secret
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(c *telegram.Config)
		want []string // keys named in the error; none: valid
	}{
		{"defaults with token and secret", func(*telegram.Config) {}, nil},
		{"polling needs no secret", func(c *telegram.Config) { c.Mode, c.WebhookSecret = telegram.ModePolling, "" }, nil},
		{"greeting", func(c *telegram.Config) { c.Greeting = "Hello! How can we help?" }, nil},
		{"missing token", func(c *telegram.Config) { c.Token = "" }, []string{"token"}},
		{"malformed token", func(c *telegram.Config) { c.Token = "not a token" }, []string{"token"}},
		{"unknown mode", func(c *telegram.Config) { c.Mode = "push" }, []string{"mode"}},
		{"webhook without secret", func(c *telegram.Config) { c.WebhookSecret = "" }, []string{"webhook_secret"}},
		{"secret with bad characters", func(c *telegram.Config) { c.WebhookSecret = "no spaces please" }, []string{"webhook_secret"}},
		{"secret too long", func(c *telegram.Config) { c.WebhookSecret = strings.Repeat("a", 257) }, []string{"webhook_secret"}},
		{"bad api_base", func(c *telegram.Config) { c.APIBase = "api.telegram.org" }, []string{"api_base"}},
		{"greeting too long", func(c *telegram.Config) { c.Greeting = strings.Repeat("😀", 2049) }, []string{"greeting"}},
		{"blank greeting", func(c *telegram.Config) { c.Greeting = "  " }, []string{"greeting"}},
		{"set_webhook while polling", func(c *telegram.Config) { c.Mode, c.SetWebhook = telegram.ModePolling, true }, []string{"set_webhook"}},
		{"poll_timeout not whole seconds", func(c *telegram.Config) { c.PollTimeout = 1500 * time.Millisecond }, []string{"poll_timeout"}},
		{"poll_timeout zero", func(c *telegram.Config) { c.PollTimeout = 0 }, []string{"poll_timeout"}},
		{"everything wrong at once", func(c *telegram.Config) { c.Token, c.Mode, c.APIBase = "", "x", "" },
			[]string{"token", "mode", "api_base"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want errors on %v", tc.want)
			}
			for _, key := range tc.want {
				if !strings.Contains(err.Error(), key+":") {
					t.Errorf("error %q does not name %s", err, key)
				}
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error %q shows the token", err)
			}
		})
	}
}
