package wecom_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/wecom"
	"github.com/kefuhq/kefu/channels/wecom/wecomtest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/media"
)

// Tests in this package share silenceper/wechat's process globals (through
// wxapi's route), so none of them runs in parallel.

const (
	corpID  = "ww0123456789abcdef"
	secret  = "app-secret-for-tests"
	agentID = 1000002
	token   = "callback-token"
	aesKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	name    = "wecom"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness is a wecom channel over a real store, with the fake API, its
// outbox Deliverer and its Follower running, its webhook on an httptest
// server, and agents: alice and bob (on Work WeChat), carol (an admin on
// Work WeChat) and dave (console only).
type harness struct {
	t        *testing.T
	api      *wecomtest.Server
	app      wecomtest.App
	store    core.Store
	media    *media.Store
	mediaDir string
	svc      *core.Service
	presence *core.MemoryPresence
	ch       *wecom.Channel
	srv      *httptest.Server
	cfg      wecom.Config
	agents   map[string]core.Agent
	// beforeEnqueue, when set, runs before the channel queues an outbox
	// entry: what the agent could do the moment a notification is queued.
	beforeEnqueue atomic.Pointer[func(core.OutboxEntry)]
	// failEnqueues is how many of the next outbox writes fail.
	failEnqueues atomic.Int32
}

// hookStore lets a test act just before the channel's outbox writes.
type hookStore struct {
	core.Store
	h *harness
}

func (s hookStore) Enqueue(ctx context.Context, e core.OutboxEntry) (core.OutboxEntry, error) {
	if f := s.h.beforeEnqueue.Load(); f != nil {
		(*f)(e)
	}
	for n := s.h.failEnqueues.Load(); n > 0; n = s.h.failEnqueues.Load() {
		if s.h.failEnqueues.CompareAndSwap(n, n-1) {
			return core.OutboxEntry{}, errors.New("the disk is full")
		}
	}
	return s.Store.Enqueue(ctx, e)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, api: wecomtest.NewServer(corpID, secret, agentID), agents: map[string]core.Agent{}}
	t.Cleanup(h.api.Close)
	h.app = wecomtest.App{CorpID: corpID, AgentID: agentID, Token: token, AESKey: aesKey}
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "kefu.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	h.mediaDir = filepath.Join(dir, "media")
	backend, err := local.New(h.mediaDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	if h.media, err = media.New(backend, media.Options{}); err != nil {
		t.Fatal(err)
	}
	h.presence = core.NewMemoryPresence()
	h.svc = core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour},
		core.Deps{Store: hookStore{Store: st, h: h}, Presence: h.presence, Notifier: nopNotifier{}, Logger: quiet})
	for _, a := range []core.Agent{
		{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, WeComUserID: "alice"},
		{Email: "bob@example.com", Name: "Bob", Role: core.RoleAgent, WeComUserID: "bob"},
		{Email: "carol@example.com", Name: "Carol", Role: core.RoleAdmin, WeComUserID: "carol"},
		{Email: "dave@example.com", Name: "Dave", Role: core.RoleAgent},
	} {
		a.Active = true
		created, err := st.CreateAgent(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		h.agents[strings.Split(a.Email, "@")[0]] = created
	}
	h.cfg = wecom.Config{CorpID: corpID, AgentID: agentID, Secret: secret, Token: token, EncodingAESKey: aesKey, APIBase: h.api.URL,
		ChannelNames: map[string]string{"wx": "WeChat"}}
	if err := h.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.ch, err = wecom.New(name, h.cfg, channels.Deps{Service: h.svc, Media: h.media, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.ch.Close() })
	// As on a node of a cluster: callbacks are claimed in the store too
	// (otherNode is another node).
	h.ch.SetClustered()
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
	f, err := bridge.NewFollower(bridge.FollowerConfig{Name: name, Handler: h.ch, Store: st, Poll: 20 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = d.Run(rctx) })
	wg.Go(func() { _ = f.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitFor(t, "follower cursor", func() bool {
		_, err := st.Setting(ctx, "follow."+name)
		return err == nil
	})
	time.Sleep(5 * time.Millisecond) // messages must be newer than the follower's start
	return h
}

// says posts member userid's text to the app and expects 200.
func (h *harness) says(userid, text string) {
	h.t.Helper()
	h.post(h.app.Text(userid, text, ""))
}

func (h *harness) post(msg []byte) {
	h.t.Helper()
	resp, err := h.app.Post(h.srv.Client(), h.srv.URL, msg)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(b) != 0 {
		h.t.Fatalf("callback: HTTP %d %q", resp.StatusCode, b)
	}
}

// customer ingests a customer message on the "wx" channel.
func (h *harness) customer(id, text string) core.Conversation {
	h.t.Helper()
	res, err := h.svc.Ingest(context.Background(), core.Inbound{Channel: "wx", ExternalID: id, Name: "张三 " + id,
		Message: core.Message{Kind: core.KindText, Text: text}})
	if err != nil {
		h.t.Fatal(err)
	}
	return res.Conversation
}

// expect waits for an app message to userid containing want, after the
// first skip messages to them, and returns how many they have then.
func (h *harness) expect(userid string, skip int, want string) int {
	h.t.Helper()
	got, ok := h.api.WaitFor(10*time.Second, func(ms []wecomtest.AppMessage) bool {
		n := 0
		for _, m := range ms {
			if strings.EqualFold(m.ToUser, userid) {
				n++
				if n > skip && strings.Contains(m.Text, want) {
					return true
				}
			}
		}
		return false
	})
	if !ok {
		var texts []string
		for _, m := range got {
			if strings.EqualFold(m.ToUser, userid) {
				texts = append(texts, m.MsgType+":"+m.Text)
			}
		}
		h.t.Fatalf("no app message to %s containing %q after %d; got %q", userid, want, skip, texts)
	}
	return len(h.api.MessagesTo(userid))
}

// quiet waits a little and checks that userid got no message after n.
func (h *harness) quietFor(userid string, n int) {
	h.t.Helper()
	time.Sleep(300 * time.Millisecond)
	if got := h.api.MessagesTo(userid); len(got) != n {
		var texts []string
		for _, m := range got[n:] {
			texts = append(texts, m.Text)
		}
		h.t.Fatalf("%s got %d more messages: %q", userid, len(got)-n, texts)
	}
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

func (h *harness) conv(id int64) core.Conversation {
	h.t.Helper()
	c, err := h.store.Conversation(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// agentTexts returns the texts agents sent into a conversation.
func (h *harness) agentTexts(convID int64) []string {
	var out []string
	for _, m := range h.messages(convID) {
		if m.SenderKind == core.SenderAgent {
			out = append(out, m.Text)
		}
	}
	return out
}

var waitFor = wait.For

type nopNotifier struct{}

func (nopNotifier) Publish(context.Context, ...core.Update)   {}
func (nopNotifier) Deliver(context.Context, core.OutboxEntry) {}

func pngImage(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 30, 20))
	for x := range 30 {
		for y := range 20 {
			img.Set(x, y, color.RGBA{uint8(x * 8), uint8(y * 12), 90, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaFiles counts the files in the media store's directory.
func (h *harness) mediaFiles() int {
	h.t.Helper()
	n := 0
	err := filepath.WalkDir(h.mediaDir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// otherNode builds a second instance of the channel on the same store and
// service, as another node of a cluster, and returns the URL of its
// webhook: Work WeChat's retry may reach it rather than the first.
func (h *harness) otherNode() string {
	h.t.Helper()
	ch, err := wecom.New(name, h.cfg, channels.Deps{Service: h.svc, Media: h.media, Logger: quiet})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { ch.Close() })
	ch.SetClustered() // h.ch is too (newHarness)
	srv := httptest.NewServer(ch)
	h.t.Cleanup(srv.Close)
	return srv.URL
}

// holdFirstAnswer makes the next callback's handling wait before it queues
// its answer, until release is closed (entered says it is there), and
// counts the handlings that queue one. Store nil in h.beforeEnqueue to stop.
func (h *harness) holdFirstAnswer() (handlings *atomic.Int32, entered chan struct{}, release chan struct{}) {
	handlings = new(atomic.Int32)
	entered, release = make(chan struct{}, 1), make(chan struct{})
	hook := func(core.OutboxEntry) {
		if handlings.Add(1) == 1 {
			entered <- struct{}{}
			<-release
		}
	}
	h.beforeEnqueue.Store(&hook)
	return handlings, entered, release
}
