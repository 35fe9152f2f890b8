package wecom_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/wecom"
	"github.com/kefuhq/kefu/channels/wecom/wecomtest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// A conversation the agent selected is closed by someone else (an admin,
// from Work WeChat or the console). The agent's next plain reply must not
// reopen it unasked (the rule /take and the no-selection path follow).
func TestPlainReplyDoesNotReopenASelectionClosedByOthers(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")
	c1 := h.customer("c1", "hello")
	n = h.expect("alice", n, "assigned to you")
	h.says("alice", fmt.Sprintf("#%d Hello", c1.ID)) // selects c1
	waitFor(t, "reply", func() bool { return len(h.agentTexts(c1.ID)) == 1 })

	// Carol, an admin, closes it from the console.
	if _, err := h.svc.Close(context.Background(), h.agents["carol"].ID, c1.ID); err != nil {
		t.Fatal(err)
	}
	n = h.expect("alice", n, "closed by Carol")

	h.says("alice", "ok, bye everyone") // a plain reply
	h.expect("alice", n, "which you selected, is closed. Nothing was sent")
	if c := h.conv(c1.ID); c.Status != core.StatusResolved || len(h.agentTexts(c1.ID)) != 1 {
		t.Fatalf("plain reply after someone else closed the selected conversation: status %s, agent texts %q",
			c.Status, h.agentTexts(c1.ID))
	}
}

// raceStore runs hook once, the first time the service looks up a reply's
// dedup key of this channel: the moment between the channel's check of
// who has the conversation and the reply's commit.
type raceStore struct {
	core.Store
	once sync.Once
	hook func()
}

func (s *raceStore) MessageByDedup(ctx context.Context, key string) (core.Message, error) {
	if strings.HasPrefix(key, core.ProviderKey(name, "")) {
		s.once.Do(s.hook)
	}
	return s.Store.MessageByDedup(ctx, key)
}

// Alice answers a waiting conversation from Work WeChat ("#N text") at the
// moment Bob takes it (routing, or his own take in the console). The rule
// is that a conversation assigned to someone else is refused "so that a
// customer never gets answers from two people by accident"; the reply
// must not be sent into Bob's conversation.
func TestReplyRacingAnotherAgentsTakeIsRefused(t *testing.T) {
	ctx := context.Background()
	api := wecomtest.NewServer(corpID, secret, agentID)
	t.Cleanup(api.Close)
	app := wecomtest.App{CorpID: corpID, AgentID: agentID, Token: token, AESKey: aesKey}
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "kefu.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	backend, err := local.New(filepath.Join(dir, "media"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	ms, err := media.New(backend, media.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rs := &raceStore{Store: st}
	svc := core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour},
		core.Deps{Store: rs, Presence: core.NewMemoryPresence(), Notifier: nopNotifier{}, Logger: quiet})
	alice, err := st.CreateAgent(ctx, core.Agent{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, WeComUserID: "alice", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := st.CreateAgent(ctx, core.Agent{Email: "bob@example.com", Name: "Bob", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := wecom.Config{CorpID: corpID, AgentID: agentID, Secret: secret, Token: token, EncodingAESKey: aesKey, APIBase: api.URL}
	ch, err := wecom.New(name, cfg, channels.Deps{Service: svc, Media: ms, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	srv := httptest.NewServer(ch)
	t.Cleanup(srv.Close)

	res, err := svc.Ingest(ctx, core.Inbound{Channel: "wx", ExternalID: "c1", Name: "c1",
		Message: core.Message{Kind: core.KindText, Text: "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	conv := res.Conversation.ID
	if c, _ := st.Conversation(ctx, conv); c.AssigneeID != 0 {
		t.Fatalf("setup: conversation assigned to %d", c.AssigneeID)
	}
	rs.hook = func() {
		if _, err := svc.Take(ctx, bob.ID, conv); err != nil {
			t.Errorf("bob's take: %v", err)
		}
	}
	resp, err := app.Post(srv.Client(), srv.URL, app.Text("alice", fmt.Sprintf("#%d Hi, Alice here", conv), ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// No Deliverer runs here: what Alice is told waits in the outbox.
	heads, err := st.Outbox(ctx, name, time.Now().Add(time.Hour), 10)
	if err != nil || len(heads) != 1 || !strings.Contains(string(heads[0].Payload), "was just taken by Bob; nothing was sent") {
		t.Errorf("Alice was not told that Bob took it: %d entries, %v", len(heads), err)
		for _, e := range heads {
			t.Logf("outbox: %s", e.Payload)
		}
	}
	c, _ := st.Conversation(ctx, conv)
	all, _ := st.Messages(ctx, core.MessageQuery{ConversationID: conv})
	for _, m := range all {
		if m.SenderKind == core.SenderAgent && m.SenderID == alice.ID {
			t.Fatalf("conversation is Bob's (assignee %d, bob %d) yet Alice's reply %q was stored and goes to the customer", c.AssigneeID, bob.ID, m.Text)
		}
	}
}

// A customer's image is forwarded to the agent by uploading it to Work
// WeChat first. The Deliverer gives sends with an attachment a long budget
// (MediaSendTimeout, 5 min by default: "up to media.max_bytes on the
// server's uplink"), but the wecom channel's image notifications are
// payload entries, so they get the 30 s text budget (2 s in the harness).
// An upload slower than that (10 MB on a few Mbit/s) never finishes, is
// re-uploaded again and again for 24 h, and every later notification to
// that agent waits behind it (one outbox key per member).
func TestSlowImageUploadGetsTheMediaBudget(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")
	c := h.customer("c-img", "look")
	n = h.expect("alice", n, "assigned to you")
	img := pngImage(t)
	med, err := h.media.Save(context.Background(), bytes.NewReader(img), "photo.png")
	if err != nil {
		t.Fatal(err)
	}
	// Each upload takes 3 s (the harness's SendTimeout is 2 s, its
	// MediaSendTimeout the default 5 min).
	var slow []wecomtest.Failure
	for range 50 {
		slow = append(slow, wecomtest.Failure{Delay: 3 * time.Second})
	}
	h.api.Fail(wecomtest.PathMediaUpload, slow...)
	if _, err := h.svc.Ingest(context.Background(), core.Inbound{Channel: "wx", ExternalID: "c-img",
		Message: core.Message{Kind: core.KindImage, Media: &med}}); err != nil {
		t.Fatal(err)
	}
	h.customer("c-img", "did you get my photo?")
	_, ok := h.api.WaitFor(12*time.Second, func(ms []wecomtest.AppMessage) bool {
		for _, m := range ms {
			if strings.Contains(m.Text, "did you get my photo?") {
				return true
			}
		}
		return false
	})
	var images int
	for _, m := range h.api.MessagesTo("alice") {
		if m.MsgType == "image" {
			images++
		}
	}
	if !ok || images == 0 {
		t.Fatalf("after 12 s: image delivered %d times, later text delivered %v (conversation #%d)", images, ok, c.ID)
	}
}

// The same stale selection after an admin puts the conversation back in
// the queue: Alice's next plain reply silently takes it back (routing
// keeps it from her for an hour: declineFor) and answers the customer.
func TestPlainReplyDoesNotRetakeASelectionPutBackInTheQueue(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")
	c1 := h.customer("c1", "hello")
	n = h.expect("alice", n, "assigned to you")
	h.says("alice", fmt.Sprintf("#%d Hello", c1.ID))
	waitFor(t, "reply", func() bool { return len(h.agentTexts(c1.ID)) == 1 })
	h.says("alice", "/off")
	n = h.expect("alice", n, "You are off")
	if _, err := h.svc.Transfer(context.Background(), h.agents["carol"].ID, c1.ID, 0); err != nil {
		t.Fatal(err)
	}
	n = h.expect("alice", n, "put back in the queue by Carol")
	h.says("alice", "ok")
	h.expect("alice", n, "which you selected, was put back in the queue. Nothing was sent")
	if c := h.conv(c1.ID); c.AssigneeID == h.agents["alice"].ID || len(h.agentTexts(c1.ID)) != 1 {
		t.Fatalf("plain reply after the selected conversation was put back in the queue: assignee %d (alice %d), agent texts %q",
			c.AssigneeID, h.agents["alice"].ID, h.agentTexts(c1.ID))
	}
}
