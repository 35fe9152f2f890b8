package whatsapp

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// Test constants: the channel is "wa", for phone number testPhoneID.
const (
	testName    = "wa"
	testPhoneID = "106540352242922"
	testToken   = "EAAG-test-token"
	testSecret  = "app-secret-for-tests"
	testVerify  = "verify-me"
)

// fakeClock is a settable clock that also drives the Deliverer's timers
// (bridge.Clock), so no test sleeps through a backoff.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) At(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: t, ch: ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.Slice(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// notes is a core.Notifier that counts what it is told.
type notes struct {
	mu      sync.Mutex
	updates []core.Update
}

func (n *notes) Publish(_ context.Context, ups ...core.Update) {
	n.mu.Lock()
	n.updates = append(n.updates, ups...)
	n.mu.Unlock()
}

func (n *notes) Deliver(context.Context, core.OutboxEntry) {}

// harness is a WhatsApp channel on a real store and core, a fake Graph API,
// and the channel's webhook endpoint on a test server.
type harness struct {
	t      *testing.T
	api    *whatsapptest.Server
	ch     *Channel
	svc    *core.Service
	store  core.Store
	media  *media.Store
	clock  *fakeClock
	web    *httptest.Server
	agent  core.Agent
	notes  *notes
	ctx    context.Context
	config Config
	// mediaPath is the local media backend's folder.
	mediaPath string
}

func testConfig(apiBase string) Config {
	return Config{
		PhoneNumberID: testPhoneID, AccessToken: testToken, AppSecret: testSecret, VerifyToken: testVerify,
		APIBase: apiBase, APIVersion: DefaultAPIVersion,
		Templates: map[string]Template{"reopen": {
			Name: "reopen_conversation", Language: "en_US",
			Components: []Component{
				{Type: "body", Parameters: []Parameter{{Type: "text", Text: "our support team"}}},
				{Type: "button", SubType: "quick_reply", Index: 0, Parameters: []Parameter{{Type: "payload", Payload: "REOPEN"}}},
			},
		}},
	}
}

// newHarness builds the harness; wrap, if given, wraps the store the
// service (and so the channel) uses, while h.store stays the real one.
func newHarness(t *testing.T, wrap ...func(core.Store) core.Store) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), notes: &notes{}, ctx: context.Background()}
	h.api = whatsapptest.New(testPhoneID, testToken)
	t.Cleanup(h.api.Close)
	dir := t.TempDir()
	st, err := sqlite.Open(h.ctx, sqlite.Options{Path: filepath.Join(dir, "kefu.db"), Now: h.clock.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	var svcStore core.Store = st
	for _, w := range wrap {
		svcStore = w(svcStore)
	}
	h.mediaPath = filepath.Join(dir, "media")
	backend, err := local.New(h.mediaPath)
	if err != nil {
		t.Fatal(err)
	}
	if h.media, err = media.New(backend, media.Options{}); err != nil {
		t.Fatal(err)
	}
	h.svc = core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: 240 * time.Hour},
		core.Deps{
			Store: svcStore, Presence: core.NewMemoryPresence(), Notifier: h.notes, Now: h.clock.Now, Logger: quiet(),
			Delivers: func(ch string) bool { return ch == testName },
			Window: func(ch string) time.Duration {
				if ch == testName {
					return Window
				}
				return 0
			},
		})
	h.config = testConfig(h.api.URL)
	if err := h.config.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	ch, err := New(testName, h.config, channels.Deps{Service: h.svc, Media: h.media, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ch.now = h.clock.Now
	ch.sent.now, ch.seen.now = h.clock.Now, h.clock.Now
	h.ch = ch
	h.web = httptest.NewServer(ch)
	t.Cleanup(h.web.Close)
	h.agent, err = st.CreateAgent(h.ctx, core.Agent{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// post signs and posts a notification body; it returns the HTTP status.
func (h *harness) post(body []byte) int {
	h.t.Helper()
	resp, err := whatsapptest.Post(http.DefaultClient, h.web.URL, testSecret, body)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.t.Logf("webhook answered %d: %s", resp.StatusCode, b)
	}
	return resp.StatusCode
}

// say posts messages from a customer and requires a 200.
func (h *harness) say(from whatsapptest.Customer, msgs ...whatsapptest.Msg) {
	h.t.Helper()
	if code := h.post(whatsapptest.Body(whatsapptest.Messages(testPhoneID, from, msgs...))); code != http.StatusOK {
		h.t.Fatalf("webhook: HTTP %d", code)
	}
}

// conversations returns every conversation, oldest first.
func (h *harness) conversations() []core.Conversation {
	h.t.Helper()
	cs, err := h.store.Conversations(h.ctx, core.ConversationFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	return cs
}

// customerMessages returns the customer's messages in a conversation.
func (h *harness) customerMessages(convID int64) []core.Message {
	h.t.Helper()
	ms, err := h.store.Messages(h.ctx, core.MessageQuery{ConversationID: convID})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []core.Message
	for _, m := range ms {
		if m.SenderKind == core.SenderContact {
			out = append(out, m)
		}
	}
	return out
}

// only returns the one conversation there is.
func (h *harness) only() core.Conversation {
	h.t.Helper()
	cs := h.conversations()
	if len(cs) != 1 {
		h.t.Fatalf("%d conversations, want 1: %+v", len(cs), cs)
	}
	return cs[0]
}

// send delivers message id through the channel as the Deliverer would,
// recording the result in the store.
func (h *harness) send(id int64) (bridge.SendResult, error) {
	h.t.Helper()
	m, err := h.store.Message(h.ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := h.store.Conversation(h.ctx, m.ConversationID)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.ch.Send(h.ctx, bridge.Outgoing{Entry: core.OutboxEntry{MessageID: id}, Message: &m, Conversation: &c})
}

// deliver sends message id and records it as the Deliverer does.
func (h *harness) deliver(id int64) core.Message {
	h.t.Helper()
	res, err := h.send(id)
	if err != nil {
		h.t.Fatalf("send %d: %v", id, err)
	}
	m, _, err := h.store.UpdateStatus(h.ctx, core.StatusUpdate{MessageID: id, Status: core.MsgSent, ExternalID: res.ExternalID})
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

func (h *harness) message(id int64) core.Message {
	h.t.Helper()
	m, err := h.store.Message(h.ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return m
}

// reply has the agent answer a conversation.
func (h *harness) reply(convID int64, text string) core.Message {
	h.t.Helper()
	m, err := h.svc.Reply(h.ctx, h.agent.ID, convID, core.Message{Kind: core.KindText, Text: text})
	if err != nil {
		h.t.Fatalf("reply: %v", err)
	}
	return m
}

// Sample files whose types media storage sniffs.

func jpegSample(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 16, 12))
	for x := range 16 {
		img.Set(x, x%12, color.RGBA{R: 200, A: 255})
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func oggSample() []byte {
	ogg := append([]byte("OggS\x00\x02"), make([]byte, 20)...)
	ogg = append(ogg, 1, 19)
	return append(ogg, "OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"...)
}

func mp4Sample() []byte {
	b := []byte{0, 0, 0, 0x18}
	b = append(b, "ftypmp42\x00\x00\x02\x00mp42isom"...)
	return append(b, make([]byte, 64)...)
}

func pdfSample() []byte {
	return []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
}
