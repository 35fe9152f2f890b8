package telegram_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/media"
)

const (
	token  = "123456:TEST-token_for-kefu"
	secret = "webhook-secret_123"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness is a Telegram channel named "tg" over a real store and media
// storage, with a fake Bot API, an outbox Deliverer, and an agent.
type harness struct {
	t     *testing.T
	api   *telegramtest.Server
	store core.Store
	media *media.Store
	svc   *core.Service
	ch    *telegram.Channel
	agent core.Agent
	dir   string
	cfg   telegram.Config
}

type options struct {
	mode     string
	greeting string
	offline  string // routing.offline_reply
	noAgent  bool   // leave the agent offline
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	h := &harness{t: t, api: telegramtest.New(token), dir: t.TempDir()}
	t.Cleanup(h.api.Close)
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(h.dir, "kefu.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	backend, err := local.New(filepath.Join(h.dir, "media"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	if h.media, err = media.New(backend, media.Options{}); err != nil {
		t.Fatal(err)
	}
	presence := core.NewMemoryPresence()
	h.svc = core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour, OfflineReply: o.offline},
		core.Deps{Store: st, Presence: presence, Notifier: nopNotifier{}, Logger: quiet,
			Delivers: func(ch string) bool { return ch == "tg" }})
	h.agent, err = st.CreateAgent(ctx, core.Agent{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noAgent {
		t.Cleanup(presence.Connect(h.agent.ID))
	}
	h.cfg = *telegram.DefaultConfig()
	h.cfg.Token, h.cfg.APIBase, h.cfg.WebhookSecret, h.cfg.Greeting = token, h.api.URL, secret, o.greeting
	h.cfg.PollTimeout = time.Second
	if o.mode != "" {
		h.cfg.Mode = o.mode
	}
	if err := h.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.ch = h.newChannel()
	h.deliver()
	return h
}

// newChannel builds another instance of the channel over the same store
// (a restarted process).
func (h *harness) newChannel() *telegram.Channel {
	h.t.Helper()
	ch, err := telegram.New("tg", h.cfg, channels.Deps{Service: h.svc, Media: h.media, Logger: quiet, PublicURL: "https://support.example.com"})
	if err != nil {
		h.t.Fatal(err)
	}
	return ch
}

// deliver runs the outbox delivery of the channel until the test ends.
func (h *harness) deliver() {
	d, err := bridge.NewDeliverer(bridge.DelivererConfig{
		Channel: "tg", Sender: h.ch, Store: h.store, Logger: quiet,
		SweepInterval: 20 * time.Millisecond,
		Backoff:       func(int) time.Duration { return 50 * time.Millisecond },
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.runUntilCleanup(d.Run)
}

// runUntilCleanup runs f until the test ends and waits for it to return.
func (h *harness) runUntilCleanup(f func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f(ctx); err != nil {
			h.t.Errorf("run: %v", err)
		}
	})
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

// conversation is the customer chatID's conversation.
func (h *harness) conversation(chatID string) core.Conversation {
	h.t.Helper()
	cs, err := h.store.Conversations(context.Background(), core.ConversationFilter{Channel: "tg", ExternalID: chatID})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(cs) != 1 {
		h.t.Fatalf("%d conversations for chat %s, want 1", len(cs), chatID)
	}
	return cs[0]
}

// conversations lists every conversation of the channel.
func (h *harness) conversations() []core.Conversation {
	h.t.Helper()
	cs, err := h.store.Conversations(context.Background(), core.ConversationFilter{Channel: "tg"})
	if err != nil {
		h.t.Fatal(err)
	}
	return cs
}

// messages lists a conversation's messages that are not events.
func (h *harness) messages(convID int64) []core.Message {
	h.t.Helper()
	ms, err := h.store.Messages(context.Background(), core.MessageQuery{ConversationID: convID})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []core.Message
	for _, m := range ms {
		if m.Kind != core.KindEvent {
			out = append(out, m)
		}
	}
	return out
}

// reply sends an agent's reply.
func (h *harness) reply(convID int64, m core.Message) core.Message {
	h.t.Helper()
	r, err := h.svc.Reply(context.Background(), h.agent.ID, convID, m)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// waitMessage waits until message id satisfies cond and returns it.
func (h *harness) waitMessage(id int64, what string, cond func(core.Message) bool) core.Message {
	h.t.Helper()
	var m core.Message
	waitFor(h.t, what, func() bool {
		var err error
		m, err = h.store.Message(context.Background(), id)
		return err == nil && cond(m)
	})
	return m
}

var waitFor = wait.For

type nopNotifier struct{}

func (nopNotifier) Publish(context.Context, ...core.Update)   {}
func (nopNotifier) Deliver(context.Context, core.OutboxEntry) {}

// pngImage is a small PNG.
func pngImage(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for x := range 40 {
		for y := range 30 {
			img.Set(x, y, color.RGBA{uint8(x * 6), uint8(y * 8), 200, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
