package wecom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels/wecom"
	"github.com/kefuhq/kefu/channels/wecom/wecomtest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
)

func TestConfigValidate(t *testing.T) {
	good := wecom.Config{CorpID: corpID, AgentID: agentID, Secret: secret, Token: token, EncodingAESKey: aesKey, APIBase: wecom.DefaultAPIBase}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	bad := wecom.Config{EncodingAESKey: "nope", APIBase: "qyapi", ChannelNames: map[string]string{"wx": " "}}
	err := bad.Validate()
	for _, key := range []string{"corp_id", "agent_id", "secret", "token", "encoding_aes_key", "api_base", "channel_names.wx"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate() = %v, want a problem with %s", err, key)
		}
	}
}

func TestVerifyURL(t *testing.T) {
	h := newHarness(t)
	do := func(req *http.Request) (int, string) {
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	req, _ := h.app.VerifyRequest(h.srv.URL, "8888812345")
	if code, body := do(req); code != http.StatusOK || body != "8888812345" {
		t.Fatalf("URL check: %d %q", code, body)
	}
	wrong := h.app
	wrong.Token = "other"
	req, _ = wrong.VerifyRequest(h.srv.URL, "8888812345")
	if code, _ := do(req); code != http.StatusForbidden {
		t.Fatalf("bad signature: %d", code)
	}
	otherCorp := h.app
	otherCorp.CorpID = "wwffffffffffffffff"
	req, _ = otherCorp.VerifyRequest(h.srv.URL, "8888812345")
	if code, _ := do(req); code != http.StatusForbidden {
		t.Fatalf("sealed for another corp: %d", code)
	}
	stale := h.app
	stale.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	req, _ = stale.VerifyRequest(h.srv.URL, "8888812345")
	if code, _ := do(req); code != http.StatusForbidden {
		t.Fatalf("stale: %d", code)
	}
}

func TestBadCallbacksStoreNothing(t *testing.T) {
	h := newHarness(t)
	msg := h.app.Text("alice", "/on", "")
	build := func(a wecomtest.App, f func(*http.Request)) *http.Request {
		req, err := a.Request(h.srv.URL, msg)
		if err != nil {
			t.Fatal(err)
		}
		if f != nil {
			f(req)
		}
		return req
	}
	set := func(k, v string) func(*http.Request) {
		return func(r *http.Request) {
			q := r.URL.Query()
			q.Set(k, v)
			r.URL.RawQuery = q.Encode()
		}
	}
	wrongToken, otherCorp, otherKey, stale := h.app, h.app, h.app, h.app
	wrongToken.Token = "other"
	otherCorp.CorpID = "wwffffffffffffffff"
	otherKey.AESKey = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210abcdefg"
	stale.Now = func() time.Time { return time.Now().Add(-6 * time.Minute) }
	tests := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"signed with another token", build(wrongToken, nil), http.StatusForbidden},
		{"msg_signature changed", build(h.app, set("msg_signature", strings.Repeat("f", 40))), http.StatusForbidden},
		{"nonce changed", build(h.app, set("nonce", "42")), http.StatusForbidden},
		{"stale", build(stale, nil), http.StatusForbidden},
		{"sealed for another corp", build(otherCorp, nil), http.StatusForbidden},
		{"another EncodingAESKey", build(otherKey, nil), http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.srv.Client().Do(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	resp, err := h.srv.Client().Post(h.srv.URL+"?timestamp=1&nonce=1&msg_signature=x", "text/xml", strings.NewReader("<xml><Encrypt>"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed: HTTP %d", resp.StatusCode)
	}
	depth, _, err := h.store.OutboxStats(context.Background())
	if err != nil || depth != 0 {
		t.Fatalf("outbox depth %d, %v: a bad callback was acted on", depth, err)
	}
	if avail, _ := h.presence.Available(context.Background()); len(avail) != 0 {
		t.Fatalf("a bad /on took effect: %v", avail)
	}
}

func TestNotificationsAndReplyRules(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")

	c1 := h.customer("c1", "hello")
	n = h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c1] assigned to you, waiting:\n› hello", c1.ID))
	h.customer("c1", "where is my order?")
	n = h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c1] where is my order?", c1.ID))

	// Only one open conversation: a plain reply goes there.
	h.says("alice", "Checking now")
	waitFor(t, "plain reply stored", func() bool { return len(h.agentTexts(c1.ID)) == 1 })

	c2 := h.customer("c2", "hi there")
	n = h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c2] assigned to you, waiting:\n› hi there", c2.ID))

	// Two open conversations and no selection: kefu asks and sends nothing.
	h.says("alice", "which one?")
	n = h.expect("alice", n, "Which conversation? Nothing was sent")

	// #N answers N and selects it; plain replies follow it.
	h.says("alice", fmt.Sprintf("#%d Hello two", c2.ID))
	h.says("alice", "More for two")
	waitFor(t, "replies to #2", func() bool { return len(h.agentTexts(c2.ID)) == 2 })

	// A notification from another conversation makes a plain reply ambiguous.
	h.customer("c1", "ping")
	n = h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c1] ping", c1.ID))
	h.says("alice", "is this for one or two?")
	n = h.expect("alice", n, fmt.Sprintf("New messages from #%d arrived since you selected #%d. Nothing was sent", c1.ID, c2.ID))
	h.says("alice", fmt.Sprintf("＃%d pong", c1.ID)) // a full-width # from a Chinese keyboard
	h.says("alice", "and plain to one again")
	waitFor(t, "replies to #1", func() bool { return len(h.agentTexts(c1.ID)) == 3 })

	if got := h.agentTexts(c1.ID); !slices.Equal(got, []string{"Checking now", "pong", "and plain to one again"}) {
		t.Fatalf("#1 agent messages = %q", got)
	}
	if got := h.agentTexts(c2.ID); !slices.Equal(got, []string{"Hello two", "More for two"}) {
		t.Fatalf("#2 agent messages = %q", got)
	}
	for _, m := range h.messages(c1.ID) {
		if m.SenderKind == core.SenderAgent && m.SenderID != h.agents["alice"].ID {
			t.Fatalf("reply from the wrong agent: %+v", m)
		}
	}
	h.quietFor("alice", n)
}

// A reply the agent sends the moment a notification is queued (before it is
// even delivered) must already count it: kefu asks which conversation
// rather than send to the selected one. (The state used to be saved after
// the notification was queued; a quick agent's reply went to the wrong
// customer.)
func TestReplyRacingANotification(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")
	c1 := h.customer("c1", "hello")
	n = h.expect("alice", n, "assigned to you")
	c2 := h.customer("c2", "hi there")
	n = h.expect("alice", n, "assigned to you")
	h.says("alice", fmt.Sprintf("#%d Hello two", c2.ID))
	waitFor(t, "reply to #2", func() bool { return len(h.agentTexts(c2.ID)) == 1 })

	var once sync.Once
	replied := make(chan error, 1)
	hook := func(e core.OutboxEntry) {
		if !strings.Contains(string(e.Payload), "ping") {
			return
		}
		once.Do(func() {
			resp, err := h.app.Post(h.srv.Client(), h.srv.URL, h.app.Text("alice", "quick plain reply", ""))
			if err == nil {
				resp.Body.Close()
			}
			replied <- err
		})
	}
	h.beforeEnqueue.Store(&hook)
	h.customer("c1", "ping")
	if err := <-replied; err != nil {
		t.Fatal(err)
	}
	h.expect("alice", n, fmt.Sprintf("New messages from #%d arrived since you selected #%d. Nothing was sent", c1.ID, c2.ID))
	if got := h.agentTexts(c2.ID); !slices.Equal(got, []string{"Hello two"}) {
		t.Fatalf("#2 agent messages = %q: the reply went to the selected conversation", got)
	}
}

// A reply the customer's channel refuses for good (here: the user blocked
// the bot) is reported to its author in Work WeChat, with the reason and
// the reply it was, each report quoting its own reply.
func TestFailedReplyIsReportedToItsAuthor(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")
	c1 := h.customer("c1", "hello")
	n = h.expect("alice", n, "assigned to you")
	h.says("alice", fmt.Sprintf("#%d here is your refund link", c1.ID))
	h.says("alice", "and the invoice")
	var replies []core.Message
	waitFor(t, "the replies stored", func() bool {
		replies = nil
		for _, m := range h.messages(c1.ID) {
			if m.SenderKind == core.SenderAgent && m.Kind == core.KindText {
				replies = append(replies, m)
			}
		}
		return len(replies) == 2
	})
	// Their failures come in the other order.
	for _, r := range []core.Message{replies[1], replies[0]} {
		if _, err := h.svc.UpdateStatus(context.Background(), core.StatusUpdate{MessageID: r.ID, Status: core.MsgFailed, Reason: "the user blocked the bot"}); err != nil {
			t.Fatal(err)
		}
	}
	// Both reports, which may arrive together: read them once both are in.
	var reports []string
	waitFor(t, "both reports", func() bool {
		reports = nil
		for _, m := range h.api.MessagesTo("alice")[n:] {
			if strings.Contains(m.Text, "NOT delivered to the customer: the user blocked the bot") {
				reports = append(reports, m.Text)
			}
		}
		return len(reports) == 2
	})
	if !strings.HasSuffix(reports[0], "> and the invoice") || !strings.HasSuffix(reports[1], "> here is your refund link") {
		t.Fatalf("the reports do not quote their own replies: %q", reports)
	}
}

func TestImages(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	n := h.expect("alice", 0, "You are on")
	img := pngImage(t)
	med, err := h.media.Save(context.Background(), bytes.NewReader(img), "photo.png")
	if err != nil {
		t.Fatal(err)
	}
	c := h.customer("c-img", "look")
	n = h.expect("alice", n, "assigned to you")
	if _, err := h.svc.Ingest(context.Background(), core.Inbound{Channel: "wx", ExternalID: "c-img",
		Message: core.Message{Kind: core.KindImage, Media: &med}}); err != nil {
		t.Fatal(err)
	}
	n = h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c-img] [image]", c.ID))
	got, ok := h.api.WaitFor(5*time.Second, func(ms []wecomtest.AppMessage) bool {
		return len(ms) > 0 && ms[len(ms)-1].MsgType == "image"
	})
	if !ok || !bytes.Equal(got[len(got)-1].Image, img) {
		t.Fatalf("no image app message with the customer's image")
	}
	// The agent answers with an image from their phone.
	h.api.AddMedia("agent-photo", wecomtest.Media{CType: "image/png", Body: img})
	h.post(h.app.Image("alice", "agent-photo", "", ""))
	waitFor(t, "agent image stored", func() bool {
		for _, m := range h.messages(c.ID) {
			if m.SenderKind == core.SenderAgent && m.Kind == core.KindImage && m.Media != nil && m.Media.Size == int64(len(img)) {
				return true
			}
		}
		return false
	})
	// Work WeChat's retry of the same image (same MsgId) is stored once,
	// and the file fetched again for it does not stay behind. (A callback
	// is handled before it is answered.)
	again := h.app.Image("alice", "agent-photo", "", wecomtest.NextMsgID())
	h.post(again)
	files := h.mediaFiles()
	h.post(again)
	if got := h.mediaFiles(); got != files {
		t.Errorf("%d media files after a retried image, want %d", got, files)
	}
	agentImages := 0
	for _, m := range h.messages(c.ID) {
		if m.SenderKind == core.SenderAgent && m.Kind == core.KindImage {
			agentImages++
		}
	}
	if agentImages != 2 {
		t.Errorf("%d agent images, want 2 (the retry stored once)", agentImages)
	}
	// Other message types go nowhere, with a word to the agent.
	h.post([]byte(strings.Replace(string(h.app.Text("alice", "x", "")), "<![CDATA[text]]>", "<![CDATA[voice]]>", 1)))
	h.expect("alice", n, "Only text and images reach customers")
}

func TestMayNotAnswerOthersConversations(t *testing.T) {
	h := newHarness(t)
	h.says("bob", "/on")
	h.expect("bob", 0, "You are on")
	c := h.customer("c3", "for bob")
	h.expect("bob", 1, "assigned to you")

	h.says("alice", fmt.Sprintf("#%d I'll answer that", c.ID))
	n := h.expect("alice", 0, fmt.Sprintf("#%d is handled by Bob; nothing was sent.", c.ID))
	h.says("carol", fmt.Sprintf("#%d admin here", c.ID)) // admins too: /transfer first
	h.expect("carol", 0, "is handled by Bob; nothing was sent.")
	h.says("alice", fmt.Sprintf("/close %d", c.ID))
	h.expect("alice", n, "only they or an admin may close it")
	if got := h.agentTexts(c.ID); len(got) != 0 {
		t.Fatalf("agent messages = %q", got)
	}
	if h.conv(c.ID).Status != core.StatusOpen {
		t.Fatal("closed by someone who may not")
	}
	h.says("carol", fmt.Sprintf("/close %d", c.ID))
	h.expect("carol", 1, "Closed #")
	h.expect("bob", 2, "closed by Carol")
}

func TestUnknownMemberAndEvents(t *testing.T) {
	h := newHarness(t)
	h.says("zed", "hello?")
	h.expect("zed", 0, "not linked to a kefu agent")
	h.post(h.app.Event("alice", "enter_agent"))
	h.quietFor("alice", 0)
	depth, _, _ := h.store.OutboxStats(context.Background())
	if depth != 0 {
		t.Fatalf("outbox depth %d", depth)
	}
	// Deactivated agents are told.
	a := h.agents["bob"]
	a.Active = false
	if err := storetest.UpdateAgent(h.store, a); err != nil {
		t.Fatal(err)
	}
	h.says("bob", "/on")
	h.expect("bob", 0, "deactivated")
}

// TestLinkedInTheConsole: an agent an admin links to Work WeChat after
// the start (through the core, as the console and the API do) can answer
// from it at once, and a Work WeChat id moved to another agent acts for
// that agent from its next message.
func TestLinkedInTheConsole(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	carol, dave, alice := h.agents["carol"], h.agents["dave"], h.agents["alice"]
	h.says("dave", "/on")
	n := h.expect("dave", 0, "not linked to a kefu agent")
	link := func(a core.Agent, id string) {
		t.Helper()
		if _, err := h.svc.UpdateAgent(ctx, carol.ID, a.ID, core.AgentChange{WeComUserID: &id}); err != nil {
			t.Fatal(err)
		}
	}
	link(dave, "dave")
	h.says("dave", "/on")
	n = h.expect("dave", n, "You are on")
	if avail, _ := h.presence.Available(ctx); !slices.Contains(avail, dave.ID) {
		t.Fatal("dave is not available after /on")
	}

	// The id "dave" now belongs to Alice: its next /on is hers.
	link(dave, "")
	link(alice, "dave")
	h.says("dave", "/on")
	h.expect("dave", n, "You are on")
	if avail, _ := h.presence.Available(ctx); !slices.Contains(avail, alice.ID) {
		t.Fatal("the moved id did not act for alice")
	}
}

func TestCommands(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.says("alice", "/help")
	n := h.expect("alice", 0, "/transfer 123 bob")
	h.says("alice", "/frobnicate")
	n = h.expect("alice", n, "Unknown command /frobnicate")
	h.says("alice", "/take")
	n = h.expect("alice", n, "Usage: /take 123")

	c := h.customer("c4", "anyone?") // nobody is on: it waits
	h.says("alice", "/list")
	n = h.expect("alice", n, fmt.Sprintf("Waiting in the queue: 1\n#%d WeChat · 张三 c4", c.ID))

	h.says("alice", fmt.Sprintf("/take #%d", c.ID))
	// The answer and the follower's notification may come in either order.
	h.expect("alice", n, "is yours now")
	h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c4] you took it, waiting:\n› anyone?", c.ID))
	n = len(h.api.MessagesTo("alice"))
	if got := h.conv(c.ID); got.AssigneeID != h.agents["alice"].ID {
		t.Fatalf("assignee = %d", got.AssigneeID)
	}
	h.says("alice", fmt.Sprintf("/take %d", c.ID))
	n = h.expect("alice", n, "is already yours")

	h.says("alice", fmt.Sprintf("/transfer %d nobody", c.ID))
	n = h.expect("alice", n, `No active agent is called "nobody"`)
	h.says("alice", fmt.Sprintf("/transfer %d bob", c.ID))
	n = h.expect("alice", n, "is now with Bob")
	h.expect("bob", 0, fmt.Sprintf("[#%d WeChat · 张三 c4] transferred to you by Alice, waiting:\n› anyone?", c.ID))
	h.says("bob", fmt.Sprintf("/transfer %d alice@example.com", c.ID))
	h.expect("bob", 1, "is now with Alice")
	// Alice has seen "anyone?" already: the transfer back shows no backlog.
	n = h.expect("alice", n, fmt.Sprintf("[#%d WeChat · 张三 c4] transferred to you by Bob", c.ID))
	if last := h.api.MessagesTo("alice")[n-1].Text; strings.Contains(last, "anyone?") {
		t.Fatalf("backlog shown twice: %q", last)
	}

	h.says("alice", "/close")
	n = h.expect("alice", n, fmt.Sprintf("Closed #%d", c.ID))
	h.says("alice", fmt.Sprintf("/close %d", c.ID))
	n = h.expect("alice", n, "is already closed")
	if h.conv(c.ID).Status != core.StatusResolved {
		t.Fatal("not closed")
	}

	h.says("alice", "/off")
	n = h.expect("alice", n, "You are off")
	if avail, _ := h.presence.Available(ctx); slices.Contains(avail, h.agents["alice"].ID) {
		t.Fatal("alice still available after /off")
	}
	h.says("alice", "/list")
	h.expect("alice", n, "You are off")
}

func TestOnSaysHowManyWait(t *testing.T) {
	h := newHarness(t)
	c5 := h.customer("c5", "first")
	c6 := h.customer("c6", "second")
	h.says("alice", "/on")
	h.expect("alice", 0, "2 waiting conversation(s) assigned to you now, 0 still waiting.")
	for _, c := range []core.Conversation{c5, c6} {
		h.expect("alice", 0, fmt.Sprintf("[#%d WeChat", c.ID))
	}
}

func TestRetriedCallbackStoredOnce(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/on")
	c := h.customer("c7", "hi")
	h.expect("alice", 1, "assigned to you")
	msg := h.app.Text("alice", fmt.Sprintf("#%d only once", c.ID), wecomtest.NextMsgID())
	h.post(msg)
	h.post(msg) // Work WeChat's retry
	if got := h.agentTexts(c.ID); !slices.Equal(got, []string{"only once"}) {
		t.Fatalf("agent messages = %q", got)
	}
}

func TestTokenRejectedRefetchedOnce(t *testing.T) {
	h := newHarness(t)
	h.says("alice", "/help")
	n := h.expect("alice", 0, "kefu commands")
	h.api.ExpireToken()
	h.says("alice", "/list")
	h.expect("alice", n, "no open conversation")
	calls := h.api.CallsTo(wecomtest.PathSend)
	if len(calls) != 3 || calls[1].ErrCode != 42001 || calls[2].ErrCode != 0 {
		t.Fatalf("send calls = %+v", calls)
	}
	if got := h.api.TokenFetches(); got != 2 {
		t.Fatalf("token fetches = %d, want 2", got)
	}
}

func TestServerErrorThenSuccessDeliveredOnce(t *testing.T) {
	h := newHarness(t)
	h.api.Fail(wecomtest.PathSend, wecomtest.Failure{Status: http.StatusInternalServerError}, wecomtest.Failure{ErrCode: -1})
	h.says("alice", "/help")
	h.expect("alice", 0, "kefu commands")
	time.Sleep(200 * time.Millisecond)
	if got := h.api.MessagesTo("alice"); len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
	if n := len(h.api.CallsTo(wecomtest.PathSend)); n != 3 {
		t.Fatalf("%d send calls, want 3", n)
	}
}

func TestSenderErrors(t *testing.T) {
	h := newHarness(t)
	payload, _ := json.Marshal(map[string]string{"to": "alice", "text": "hi"})
	out := bridge.Outgoing{Entry: core.OutboxEntry{ID: 1, Payload: payload}}
	send := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := h.ch.Send(ctx, out)
		return err
	}
	h.api.Fail(wecomtest.PathSend, wecomtest.Failure{ErrCode: 45009})
	var wait *bridge.RetryAfterError
	if err := send(time.Second); !errors.As(err, &wait) || wait.After < time.Second {
		t.Fatalf("45009: %v, want RetryAfter", err)
	}
	h.api.Fail(wecomtest.PathSend, wecomtest.Failure{ErrCode: 81013})
	var perm *bridge.PermanentError
	if err := send(time.Second); !errors.As(err, &perm) {
		t.Fatalf("81013: %v, want permanent", err)
	}
	h.api.SetMembers("bob")
	if err := send(time.Second); !errors.As(err, &perm) || !strings.Contains(perm.Reason, "cannot reach alice") {
		t.Fatalf("outside the visible range: %v, want permanent", err)
	}
	h.api.SetMembers("alice")
	h.api.Fail(wecomtest.PathSend, wecomtest.Failure{Delay: 5 * time.Second})
	began := time.Now()
	if err := send(200 * time.Millisecond); err == nil || errors.As(err, &perm) || time.Since(began) > 3*time.Second {
		t.Fatalf("slow API: %v after %s, want a transient error at the deadline", err, time.Since(began))
	}
	if err := send(time.Second); err != nil {
		t.Fatalf("after the slow call: %v", err)
	}
}

func TestRateLimitPerMember(t *testing.T) {
	h := newHarness(t)
	send := func(to string) error {
		payload, _ := json.Marshal(map[string]string{"to": to, "text": "x"})
		_, err := h.ch.Send(context.Background(), bridge.Outgoing{Entry: core.OutboxEntry{Payload: payload}})
		return err
	}
	// Work WeChat drops, without an error, what goes over 30 a minute to
	// one member: the 30 go at once, and the 31st waits for the minute.
	for i := range 30 {
		if err := send("alice"); err != nil {
			t.Fatalf("message %d of the minute: %v", i+1, err)
		}
	}
	var wait *bridge.RetryAfterError
	if err := send("alice"); !errors.As(err, &wait) || wait.After <= 0 || wait.After > time.Minute {
		t.Fatalf("message 31 in a minute: %v, want a wait of at most a minute", err)
	}
	if err := send("bob"); err != nil {
		t.Fatalf("another member was held back: %v", err)
	}
}

// TestOnEndsAwayAndTakeLeavesClosedAlone: /on from an agent who set away in
// the console makes them available (and the waiting conversation comes to
// them); /take of their own closed conversation says it is closed and
// selects nothing, so a plain reply does not reopen it.
func TestOnEndsAwayAndTakeLeavesClosedAlone(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.agents["alice"]
	if err := h.svc.SetAway(ctx, alice.ID, true); err != nil {
		t.Fatal(err)
	}
	c1 := h.customer("c1", "hello")
	h.says("alice", "/on")
	n := h.expect("alice", 0, "1 waiting conversation(s) assigned to you now, 0 still waiting.")
	if c := h.conv(c1.ID); c.AssigneeID != alice.ID {
		t.Fatalf("after /on while away: %+v, want it with alice", c)
	}

	h.says("alice", fmt.Sprintf("/close %d", c1.ID))
	waitFor(t, "closed", func() bool { return h.conv(c1.ID).Status == core.StatusResolved })
	h.says("alice", fmt.Sprintf("/take %d", c1.ID))
	n = h.expect("alice", n, fmt.Sprintf("#%d is closed; a reply (#%d text) reopens it.", c1.ID, c1.ID))
	h.says("alice", "one more thing")
	h.expect("alice", n, "You have no open conversation. Nothing was sent")
	if c := h.conv(c1.ID); c.Status != core.StatusResolved || len(h.agentTexts(c1.ID)) != 0 {
		t.Fatalf("a plain reply after /take of a closed conversation: %+v, agent texts %q", c, h.agentTexts(c1.ID))
	}
}

// TestRetriedCommandCarriedOutOnce: Work WeChat sends a callback again when
// its answer is late or lost. A command is carried out, and answered, once:
// for a retry after it was handled, and for one that comes while the first
// is still under way after Work WeChat hung up on it. A callback whose
// handling failed is handled again when it comes back.
func TestRetriedCommandCarriedOutOnce(t *testing.T) {
	h := newHarness(t)
	post := func(ctx context.Context, msg []byte) int {
		req, err := h.app.Request(h.srv.URL, msg)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp, err := h.srv.Client().Do(req.WithContext(ctx))
		if err != nil {
			return 0 // hung up
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	help := h.app.Text("alice", "/help", wecomtest.NextMsgID())
	h.post(help)
	h.post(help) // the retry of an answered callback
	n := h.expect("alice", 0, "kefu commands")
	h.quietFor("alice", n)
	if n != 1 {
		t.Fatalf("%d answers to one /help", n)
	}

	// A slow handling: Work WeChat hangs up and retries while it runs.
	handlings, entered, release := h.holdFirstAnswer()
	list := h.app.Text("alice", "/list", wecomtest.NextMsgID())
	hungUp, hangUp := context.WithCancel(context.Background())
	first := make(chan int, 1)
	go func() { first <- post(hungUp, list) }()
	<-entered
	hangUp()
	<-first
	retry := make(chan int, 1)
	go func() { retry <- post(context.Background(), list) }()
	time.Sleep(100 * time.Millisecond) // time for a second handling to start, if it would
	close(release)
	if code := <-retry; code != http.StatusOK {
		t.Fatalf("the retry: HTTP %d", code)
	}
	h.beforeEnqueue.Store(nil)
	if n := handlings.Load(); n != 1 {
		t.Errorf("the command was carried out %d times", n)
	}
	n = h.expect("alice", n, "You have no open conversation.")
	h.quietFor("alice", n)

	// A failed handling is carried out again by the retry.
	h.failEnqueues.Store(1)
	again := h.app.Text("alice", "/help", wecomtest.NextMsgID())
	if code := post(context.Background(), again); code != http.StatusServiceUnavailable {
		t.Fatalf("a callback whose answer could not be queued: HTTP %d, want 503", code)
	}
	h.post(again)
	n = h.expect("alice", n, "kefu commands")
	h.quietFor("alice", n)
}

// TestRetryOnAnotherNodeCarriedOutOnce: behind a load balancer, Work
// WeChat's retry of a callback may reach another node, which has not seen
// it. A command is still carried out, and answered, once: for a retry after
// it was handled, and for one that comes while the first node still runs
// it. A callback whose handling failed on one node is handled by the retry
// on another.
func TestRetryOnAnotherNodeCarriedOutOnce(t *testing.T) {
	h := newHarness(t)
	other := h.otherNode()
	post := func(url string, msg []byte) int {
		req, err := h.app.Request(url, msg)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	help := h.app.Text("alice", "/help", wecomtest.NextMsgID())
	h.post(help)
	if code := post(other, help); code != http.StatusOK {
		t.Fatalf("the retry on the other node: HTTP %d", code)
	}
	n := h.expect("alice", 0, "kefu commands")
	h.quietFor("alice", n)
	if n != 1 {
		t.Fatalf("%d answers to one /help", n)
	}

	// The retry reaches the other node while the first still runs it.
	handlings, entered, release := h.holdFirstAnswer()
	list := h.app.Text("alice", "/list", wecomtest.NextMsgID())
	first := make(chan int, 1)
	go func() { first <- post(h.srv.URL, list) }()
	<-entered
	retry := make(chan int, 1)
	go func() { retry <- post(other, list) }()
	time.Sleep(200 * time.Millisecond) // time for a second handling to start, if it would
	close(release)
	if a, b := <-first, <-retry; a != http.StatusOK || b != http.StatusOK {
		t.Fatalf("the first try: HTTP %d, the retry on the other node: HTTP %d", a, b)
	}
	h.beforeEnqueue.Store(nil)
	if n := handlings.Load(); n != 1 {
		t.Errorf("the command was carried out %d times", n)
	}
	n = h.expect("alice", n, "You have no open conversation.")
	h.quietFor("alice", n)

	// Failed on one node, carried out by the retry on the other.
	h.failEnqueues.Store(1)
	again := h.app.Text("alice", "/help", wecomtest.NextMsgID())
	if code := post(h.srv.URL, again); code != http.StatusServiceUnavailable {
		t.Fatalf("a callback whose answer could not be queued: HTTP %d, want 503", code)
	}
	if code := post(other, again); code != http.StatusOK {
		t.Fatalf("its retry on the other node: HTTP %d", code)
	}
	n = h.expect("alice", n, "kefu commands")
	h.quietFor("alice", n)
}
