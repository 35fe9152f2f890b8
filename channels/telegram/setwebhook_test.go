package telegram_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/config"
)

func loadYAML(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSetWebhookCommand(t *testing.T) {
	api := telegramtest.New(token)
	t.Cleanup(api.Close)
	api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "waiting")))
	instance := func(name, mode string) string {
		return fmt.Sprintf("  %s: {type: telegram, enabled: true, token: %q, mode: %s, webhook_secret: %q, api_base: %q}\n",
			name, token, mode, secret, api.URL)
	}
	one := "server: {public_url: \"https://support.example.com/\"}\nchannels:\n" + instance("shop-bot", "webhook")

	var out bytes.Buffer
	if err := telegram.SetWebhookCommand(context.Background(), loadYAML(t, one), "", &out); err != nil {
		t.Fatal(err)
	}
	w := api.Webhook()
	if w.URL != "https://support.example.com/webhooks/shop-bot" || w.SecretToken != secret || !slices.Equal(w.AllowedUpdates, []string{"message"}) {
		t.Fatalf("webhook = %+v", w)
	}
	if s := out.String(); !strings.Contains(s, "https://support.example.com/webhooks/shop-bot") || !strings.Contains(s, "1 updates waiting") {
		t.Fatalf("output:\n%s", s)
	}

	for _, tc := range []struct {
		name, yaml, channel, want string
		fail                      *telegramtest.Failure
	}{
		{"no public_url", "channels:\n" + instance("tg", "webhook"), "", "server.public_url", nil},
		{"polling mode", "server: {public_url: \"https://x.example\"}\nchannels:\n" + instance("tg", "polling"), "", "polling mode", nil},
		{"several", "server: {public_url: \"https://x.example\"}\nchannels:\n" + instance("a", "webhook") + instance("b", "webhook"), "", "--channel", nil},
		{"none", "server: {public_url: \"https://x.example\"}\n", "", "no enabled telegram channel", nil},
		{"unknown name", one, "nope", `no channel "nope"`, nil},
		{"Telegram refuses", one, "shop-bot", "HTTPS url must be provided",
			&telegramtest.Failure{Code: http.StatusBadRequest, Description: "Bad Request: bad webhook: HTTPS url must be provided for webhook"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fail != nil {
				api.FailNext("setWebhook", *tc.fail)
			}
			err := telegram.SetWebhookCommand(context.Background(), loadYAML(t, tc.yaml), tc.channel, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatalf("error %q shows the token", err)
			}
		})
	}
}
