package telegram_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-telegram/bot/models"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
	"github.com/kefuhq/kefu/node"
)

// startNode runs a kefu node from YAML with a telegram channel "tg" in
// mode, talking to api.
func startNode(t *testing.T, api *telegramtest.Server, mode string) (n *node.Node, base, mediaDir string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base = "http://" + ln.Addr().String()
	dir := t.TempDir()
	mediaDir = filepath.Join(dir, "media")
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0", public_url: %q}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {strategy: least_busy}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:
  tg:
    type: telegram
    enabled: true
    token: ${TG_TOKEN}
    mode: %s
    webhook_secret: ${TG_SECRET:-}
    set_webhook: %t
    api_base: %q
    greeting: "Welcome! An agent will answer here."
    poll_timeout: 1s
`, base, filepath.Join(dir, "kefu.db"), mediaDir, mode, mode == telegram.ModeWebhook, api.URL)
	env := map[string]string{"TG_TOKEN": token, "TG_SECRET": secret}
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err = node.New(ctx, cfg, node.Options{Listener: ln, Logger: quiet})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node stopped with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("node did not stop")
		}
	})
	waitFor(t, "node ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return n, base, mediaDir
}

// mediaSave stores data in a node's media folder, as the console's upload
// would.
func mediaSave(dir string, data []byte) (core.Media, error) {
	b, err := local.New(dir)
	if err != nil {
		return core.Media{}, err
	}
	defer b.Close()
	s, err := media.New(b, media.Options{})
	if err != nil {
		return core.Media{}, err
	}
	return s.Save(context.Background(), bytes.NewReader(data), "parcel.png")
}

// TestEndToEnd: a Telegram customer reaches a console agent through a real
// node, in both modes, and gets the agent's replies in order, each marked
// sent with its Telegram id.
func TestEndToEnd(t *testing.T) {
	for _, mode := range []string{telegram.ModeWebhook, telegram.ModePolling} {
		t.Run(mode, func(t *testing.T) {
			api := telegramtest.New(token)
			t.Cleanup(api.Close)
			n, base, mediaDir := startNode(t, api, mode)
			ctx := context.Background()
			svc := n.Service()
			alice, err := svc.Store().AgentByEmail(ctx, "alice@example.com")
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Presence().Connect(alice.ID)() // Alice opens the console

			// How the customer's updates reach kefu in this mode.
			var send func(u models.Update) models.Update
			if mode == telegram.ModeWebhook {
				hook := base + "/webhooks/tg"
				waitFor(t, "webhook registered on start", func() bool {
					w := api.Webhook()
					return w.URL == hook && w.SecretToken == secret && slices.Equal(w.AllowedUpdates, []string{"message"})
				})
				send = func(u models.Update) models.Update {
					code, u, err := api.Post(hook, secret, u)
					if err != nil || code != http.StatusOK {
						t.Fatalf("webhook: HTTP %d, %v", code, err)
					}
					return u
				}
				// Unsigned traffic is refused and stores nothing.
				if code, _, _ := api.Post(hook, "forged", telegramtest.Update(telegramtest.Text(666, "spoof"))); code != http.StatusUnauthorized {
					t.Fatalf("forged update: HTTP %d", code)
				}
			} else {
				send = func(u models.Update) models.Update {
					u.ID = api.AddUpdate(u)
					return u
				}
			}

			photo := api.AddFile("photos/p.png", pngImage(t))
			send(telegramtest.Update(telegramtest.Text(42, "/start")))
			hello := send(telegramtest.Update(telegramtest.Text(42, "Hello, my order #881 is late")))
			pm := telegramtest.Private(42, "Zhang", "San", "zhangsan")
			pm.Photo, pm.Caption = []models.PhotoSize{{FileID: photo, Width: 40, Height: 30}}, "the box"
			send(telegramtest.Update(pm))
			if mode == telegram.ModeWebhook {
				send(hello) // Telegram repeats an update: stored once
			} else {
				waitFor(t, "updates confirmed", func() bool { return len(api.Pending()) == 0 })
			}

			var conv core.Conversation
			waitFor(t, "the conversation routed to Alice", func() bool {
				cs, err := svc.Store().Conversations(ctx, core.ConversationFilter{Channel: "tg", ExternalID: "42"})
				if err != nil || len(cs) != 1 {
					return false
				}
				conv = cs[0]
				return conv.AssigneeID == alice.ID && conv.Status == core.StatusOpen && conv.LastSeq >= 5
			})
			var customer []string
			ms, err := svc.Store().Messages(ctx, core.MessageQuery{ConversationID: conv.ID})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				if m.SenderKind == core.SenderContact {
					customer = append(customer, string(m.Kind)+":"+m.Text)
				}
			}
			if want := []string{"text:/start", "text:Hello, my order #881 is late", "image:the box"}; !slices.Equal(customer, want) {
				t.Fatalf("customer messages %q, want %q", customer, want)
			}
			if ct, _ := svc.Store().Contact(ctx, conv.ContactID); ct.Name != "Zhang San" {
				t.Errorf("contact %+v", ct)
			}

			// Alice answers: text, an image, more text.
			img := pngImage(t)
			med, err := mediaSave(mediaDir, img)
			if err != nil {
				t.Fatal(err)
			}
			var replies []core.Message
			for _, m := range []core.Message{
				{Kind: core.KindText, Text: "Sorry! Let me check."},
				{Kind: core.KindImage, Media: &med, Text: "Is it this one?"},
				{Kind: core.KindText, Text: "It ships tomorrow."},
			} {
				r, err := svc.Reply(ctx, alice.ID, conv.ID, m)
				if err != nil {
					t.Fatal(err)
				}
				replies = append(replies, r)
			}
			sent := api.WaitSent(4, 10*time.Second)
			var got []string
			for _, s := range sent {
				if s.ChatID != 42 {
					t.Errorf("sent to chat %d", s.ChatID)
				}
				got = append(got, s.Method+":"+s.Fields["text"]+s.Fields["caption"])
			}
			want := []string{"sendMessage:Welcome! An agent will answer here.", "sendMessage:Sorry! Let me check.",
				"sendPhoto:Is it this one?", "sendMessage:It ships tomorrow."}
			if !slices.Equal(got, want) {
				t.Fatalf("Telegram got %q, want %q", got, want)
			}
			if !bytes.Equal(sent[2].Files["photo"].Data, img) {
				t.Error("the photo sent differs from the agent's")
			}
			for i, r := range replies {
				wantID := fmt.Sprintf("42:%d", sent[i+1].MessageID)
				waitFor(t, "reply marked sent", func() bool {
					m, err := svc.Store().Message(ctx, r.ID)
					return err == nil && m.Status == core.MsgSent && m.ExternalID == wantID
				})
			}

			// The customer blocks the bot: the agent sees why the next reply failed.
			api.Block(42)
			r, err := svc.Reply(ctx, alice.ID, conv.ID, core.Message{Kind: core.KindText, Text: "Anything else?"})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "reply marked failed", func() bool {
				m, err := svc.Store().Message(ctx, r.ID)
				return err == nil && m.Status == core.MsgFailed && m.FailReason == telegram.ReasonBlocked
			})
		})
	}
}
