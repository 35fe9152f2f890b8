package wechat_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/wechat"
	"github.com/kefuhq/kefu/channels/wechat/wechattest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/media"
)

// Tests in this package share silenceper/wechat's process globals (through
// wxapi's route), so none of them runs in parallel.

const (
	appID     = "wx0123456789abcdef"
	appSecret = "secret-for-tests"
	token     = "token-for-tests"
	aesKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	name      = "wx"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness is a wechat channel named "wx" over a real store and media
// storage, with a fake API, an outbox Deliverer, its webhook on an
// httptest server, and an agent online.
type harness struct {
	t       *testing.T
	api     *wechattest.Server
	acct    wechattest.Account
	store   core.Store
	media   *media.Store
	svc     *core.Service
	ch      *wechat.Channel
	srv     *httptest.Server
	agent   core.Agent
	cfg     wechat.Config
	clockMu sync.Mutex
	offset  time.Duration
}

type options struct {
	welcome string
	noKey   bool // no encoding_aes_key
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	h := &harness{t: t, api: wechattest.NewServer(appID, appSecret)}
	t.Cleanup(h.api.Close)
	h.acct = wechattest.Account{AppID: appID, Token: token, AESKey: aesKey, OriginalID: "gh_0123456789ab", Now: h.now}
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "kefu.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	backend, err := local.New(filepath.Join(dir, "media"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	if h.media, err = media.New(backend, media.Options{}); err != nil {
		t.Fatal(err)
	}
	presence := core.NewMemoryPresence()
	h.svc = core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour},
		core.Deps{Store: st, Presence: presence, Notifier: nopNotifier{}, Logger: quiet, Now: h.now,
			Delivers: func(ch string) bool { return ch == name },
			Window: func(ch string) time.Duration {
				if ch == name {
					return wechat.Window
				}
				return 0
			}})
	h.agent, err = st.CreateAgent(ctx, core.Agent{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(presence.Connect(h.agent.ID))
	h.cfg = wechat.Config{AppID: appID, AppSecret: appSecret, Token: token, EncodingAESKey: aesKey, APIBase: h.api.URL, Welcome: o.welcome}
	if o.noKey {
		h.cfg.EncodingAESKey = ""
	}
	if err := h.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.ch, err = wechat.New(name, h.cfg, channels.Deps{Service: h.svc, Media: h.media, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.ch.Close() })
	wechat.SetClock(h.ch, h.now)
	h.srv = httptest.NewServer(h.ch)
	t.Cleanup(h.srv.Close)
	d, err := bridge.NewDeliverer(bridge.DelivererConfig{
		Channel: name, Sender: h.ch, Store: st, Logger: quiet,
		SweepInterval: 20 * time.Millisecond,
		Backoff:       func(int) time.Duration { return 50 * time.Millisecond },
		SendTimeout:   2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := d.Run(dctx); err != nil {
			t.Errorf("deliverer: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return h
}

// now is the test clock: real time plus what advance added.
func (h *harness) now() time.Time {
	h.clockMu.Lock()
	defer h.clockMu.Unlock()
	return time.Now().Add(h.offset)
}

// advance moves the test clock forward.
func (h *harness) advance(d time.Duration) {
	h.clockMu.Lock()
	h.offset += d
	h.clockMu.Unlock()
}

// post sends a callback and returns the status and body.
func (h *harness) post(mode wechattest.Mode, msg []byte) (int, string) {
	h.t.Helper()
	resp, err := h.acct.Post(h.srv.Client(), h.srv.URL, mode, msg)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// do sends a hand-built request.
func (h *harness) do(req *http.Request) (int, string) {
	h.t.Helper()
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) conversations() []core.Conversation {
	h.t.Helper()
	cs, err := h.store.Conversations(context.Background(), core.ConversationFilter{Channel: name})
	if err != nil {
		h.t.Fatal(err)
	}
	return cs
}

// conversation is openID's one conversation.
func (h *harness) conversation(openID string) core.Conversation {
	h.t.Helper()
	cs, err := h.store.Conversations(context.Background(), core.ConversationFilter{Channel: name, ExternalID: openID})
	if err != nil {
		h.t.Fatal(err)
	}
	if len(cs) != 1 {
		h.t.Fatalf("%d conversations for %s, want 1", len(cs), openID)
	}
	return cs[0]
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

// amrVoice is the start of an AMR file (its magic is what sniffing reads).
func amrVoice() []byte {
	return append([]byte("#!AMR\n"), bytes.Repeat([]byte{0x3c, 0x48, 0xf5, 0x1f}, 64)...)
}

// mp4Video is the start of an MP4 file.
func mp4Video() []byte {
	b := []byte{0, 0, 0, 0x18, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 2, 0, 'i', 's', 'o', 'm', 'i', 's', 'o', '2'}
	return append(b, bytes.Repeat([]byte{0}, 256)...)
}
