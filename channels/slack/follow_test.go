package slack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels/slack"
	"github.com/kefuhq/kefu/channels/slack/slacktest"
	"github.com/kefuhq/kefu/core"
)

func TestMirrorConversation(t *testing.T) {
	h := newHarness(t, options{})
	h.follow()
	ctx := context.Background()

	first := h.customer("c1", "Zhang San", "My order <#42> & the refund?", time.Time{})
	conv := first.Conversation
	parents := h.fake.WaitPosts(1, 10*time.Second)
	if len(parents) != 1 {
		t.Fatalf("posts: %+v", parents)
	}
	p := parents[0]
	url := fmt.Sprintf("%s/console/#/conversations/%d", publicURL, conv.ID)
	for _, want := range []string{fmt.Sprintf("*#%d*", conv.ID), "Zhang San", "via crm", "> My order &lt;#42&gt; &amp; the refund?",
		"Assignee: nobody yet", "Status: waiting", "<" + url + "|Open in the console>"} {
		if !strings.Contains(p.Text, want) {
			t.Errorf("parent lacks %q:\n%s", want, p.Text)
		}
	}
	if p.ThreadTS != "" || p.Channel != supportChan {
		t.Fatalf("parent not top-level in the support channel: %+v", p)
	}
	if p.Form.Get("unfurl_links") != "false" || p.Form.Get("unfurl_media") != "false" {
		t.Errorf("customer links unfurled: %v", p.Form)
	}
	var md struct {
		EventType    string         `json:"event_type"`
		EventPayload map[string]any `json:"event_payload"`
	}
	if err := json.Unmarshal([]byte(p.Metadata), &md); err != nil || md.EventType != "kefu_conversation" || md.EventPayload["conversation_id"] != float64(conv.ID) {
		t.Fatalf("parent metadata %q: %v", p.Metadata, err)
	}

	// Later messages, assignment and close go into the thread.
	h.customer("c1", "Zhang San", "anyone?", time.Time{})
	if _, err := h.svc.Take(ctx, h.alice.ID, conv.ID); err != nil {
		t.Fatal(err)
	}
	bobs, err := h.svc.Reply(ctx, h.bob.ID, conv.ID, core.Message{Kind: core.KindText, Text: "Bob here, from the console"})
	if err != nil {
		t.Fatal(err)
	}
	// The customer's channel refuses it for good: the thread is told.
	if _, err := h.svc.UpdateStatus(ctx, core.StatusUpdate{MessageID: bobs.ID, Status: core.MsgFailed, Reason: "the user blocked the bot"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Note(ctx, h.bob.ID, conv.ID, core.Message{Kind: core.KindText, Text: "refund approved"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Close(ctx, h.alice.ID, conv.ID); err != nil {
		t.Fatal(err)
	}
	thread := h.fake.Wait("chat.postMessage", 10*time.Second, func([]slacktest.Call) bool { return len(h.fake.Thread(p.TS)) >= 6 })
	_ = thread
	got := h.fake.Thread(p.TS)
	want := []string{
		"*Zhang San:* anyone?",
		":arrow_right: Assigned to <@" + aliceSlack + "> by *Alice*",
		"*Bob* (agent): Bob here, from the console",
		":warning: *Bob*'s reply was not delivered to the customer: the user blocked the bot",
		":memo: Note by *Bob*: refund approved",
		":white_check_mark: Closed by *Alice*",
	}
	if len(got) != len(want) {
		t.Fatalf("thread has %d posts, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Text != w {
			t.Errorf("thread[%d] = %q, want %q", i, got[i].Text, w)
		}
	}
	if n := len(h.fake.Parents()); n != 1 {
		t.Fatalf("%d parents, want 1", n)
	}
	// The parent follows the assignee and the status.
	ups := h.fake.Wait("chat.update", 10*time.Second, func(cs []slacktest.Call) bool { return len(cs) >= 2 })
	if len(ups) < 2 {
		t.Fatalf("parent updates: %+v", ups)
	}
	lastUp := ups[len(ups)-1]
	if lastUp.TS != p.TS || !strings.Contains(lastUp.Text, "Assignee: *Alice*") || !strings.Contains(lastUp.Text, "Status: closed") {
		t.Fatalf("last parent update: %+v", lastUp)
	}
}

func TestAgentRepliesAreNotEchoed(t *testing.T) {
	h := newHarness(t, options{})
	h.follow()
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	p := h.fake.WaitPosts(1, 10*time.Second)[0]
	h.waitMapped(conv.ID)
	// Alice answers in the thread: kefu stores it, and must not post it back.
	if code, _ := h.post(reply(aliceSlack, p.TS, "hi, Alice here").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	h.customer("c1", "Zhang San", "thanks", time.Time{})
	waitFor(t, "the customer's second message in the thread", func() bool {
		for _, c := range h.fake.Thread(p.TS) {
			if strings.Contains(c.Text, "thanks") {
				return true
			}
		}
		return false
	})
	for _, c := range h.fake.Thread(p.TS) {
		if strings.Contains(c.Text, "Alice here") {
			t.Fatalf("the agent's Slack reply was echoed into the thread: %+v", c)
		}
	}
	// The assignment her reply caused is shown, with the reply stored.
	ms := h.messages(conv.ID)
	if ms[len(ms)-2].Text != "hi, Alice here" {
		t.Fatalf("messages: %+v", ms)
	}
}

func TestRateLimitHonoured(t *testing.T) {
	h := newHarness(t, options{})
	h.fake.FailNext("chat.postMessage", slacktest.Failure{Status: http.StatusTooManyRequests, RetryAfter: 1})
	h.follow()
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	posts := h.fake.WaitPosts(1, 15*time.Second)
	if len(posts) != 1 {
		t.Fatalf("posts: %+v", posts)
	}
	calls := h.fake.Calls("chat.postMessage")
	if len(calls) != 2 || calls[0].Status != http.StatusTooManyRequests {
		t.Fatalf("calls: %+v", calls)
	}
	if gap := calls[1].At.Sub(calls[0].At); gap < time.Second {
		t.Fatalf("posted again %v after a 429 with Retry-After: 1", gap)
	}
	// The limit holds every call of the instance, ephemeral ones too.
	h.fake.FailNext("chat.postMessage", slacktest.Failure{Status: http.StatusTooManyRequests, RetryAfter: 1})
	h.customer("c1", "Zhang San", "hello again", time.Time{})
	h.fake.Wait("chat.postMessage", 10*time.Second, func(cs []slacktest.Call) bool { return len(cs) >= 3 })
	// The fake records the call before kefu reads the 429: a call made in
	// between could not have known. Wait until kefu has read it.
	limited := h.fake.Calls("chat.postMessage")[2].At
	waitFor(t, "the 429 to close the gate", func() bool { return !h.ch.RateLimitedUntil().Before(limited.Add(time.Second)) })
	h.waitMapped(conv.ID)
	if code, _ := h.post(reply(strangerSlack, posts[0].TS, "me too").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatal("unmapped reply not answered 200")
	}
	eph := h.fake.WaitEphemerals(1, 10*time.Second)
	calls = h.fake.Calls("chat.postMessage")
	if len(eph) != 1 || eph[0].At.Sub(calls[2].At) < time.Second {
		t.Fatalf("ephemeral at %v, 429 at %v", eph, calls[2].At)
	}
	h.fake.WaitPosts(2, 10*time.Second)
}

func TestServerErrorsRetriedPermanentSkipped(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	conv := h.customer("c1", "Zhang San", "hello", time.Time{}).Conversation
	ms := h.messages(conv.ID)

	h.fake.FailNext("chat.postMessage", slacktest.Failure{Status: http.StatusServiceUnavailable})
	err := h.ch.Follow(ctx, ms[0], conv)
	var perm *bridge.PermanentError
	if err == nil || errors.As(err, &perm) {
		t.Fatalf("503: %v, want a transient error", err)
	}
	h.fake.FailNext("chat.postMessage", slacktest.Failure{Error: "not_in_channel"})
	if err := h.ch.Follow(ctx, ms[0], conv); err == nil || errors.As(err, &perm) {
		t.Fatalf("not_in_channel: %v, want transient (someone invites the bot)", err)
	}
	if err := h.ch.Follow(ctx, ms[0], conv); err != nil {
		t.Fatal(err)
	}
	second := h.customer("c1", "Zhang San", strings.Repeat("long ", 10), time.Time{}).Message
	h.fake.FailNext("chat.postMessage", slacktest.Failure{Error: "msg_too_long"})
	if err := h.ch.Follow(ctx, second, conv); !errors.As(err, &perm) {
		t.Fatalf("msg_too_long: %v, want permanent", err)
	}
	if n := len(h.fake.Parents()); n != 1 {
		t.Fatalf("%d parents after failures, want 1", n)
	}
}

func TestRestartPostsNoSecondParent(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	res := h.customer("c1", "Zhang San", "hello", time.Time{})
	second := h.customer("c1", "Zhang San", "are you there?", time.Time{}).Message
	conv := h.conversation(res.Conversation.ID)
	if err := h.ch.Follow(ctx, res.Message, conv); err != nil {
		t.Fatal(err)
	}
	if err := h.ch.Follow(ctx, second, conv); err != nil {
		t.Fatal(err)
	}
	// The process restarts; the follower had not saved its cursor, so it
	// hands both messages over again, then a new one.
	restarted := h.newChannel()
	third := h.customer("c1", "Zhang San", "hello?", time.Time{}).Message
	for _, m := range []core.Message{res.Message, second, third} {
		if err := restarted.Follow(ctx, m, conv); err != nil {
			t.Fatal(err)
		}
	}
	parents := h.fake.Parents()
	if len(parents) != 1 {
		t.Fatalf("%d parents, want 1", len(parents))
	}
	var texts []string
	for _, c := range h.fake.Thread(parents[0].TS) {
		texts = append(texts, c.Text)
	}
	if strings.Join(texts, "|") != "*Zhang San:* are you there?|*Zhang San:* hello?" {
		t.Fatalf("thread = %q", texts)
	}
}

func TestCrashAfterParentPosted(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	res := h.customer("c1", "Zhang San", "hello", time.Time{})
	conv := res.Conversation
	// kefu marked the parent pending and posted it, then died before
	// saving its ts.
	if err := h.store.PutSetting(ctx, fmt.Sprintf("slack.slack.thread.%d", conv.ID), fmt.Sprintf("pending %d", time.Now().Unix())); err != nil {
		t.Fatal(err)
	}
	meta := fmt.Sprintf(`{"event_type":"kefu_conversation","event_payload":{"conversation_id":%d,"instance":"slack","quoted_message_id":%d}}`, conv.ID, res.Message.ID)
	h.fake.AddHistory(slacktest.Message{Channel: supportChan, Text: "another conversation", BotID: slacktest.BotID,
		Metadata: json.RawMessage(fmt.Sprintf(`{"event_type":"kefu_conversation","event_payload":{"conversation_id":%d,"instance":"slack"}}`, conv.ID+100))})
	ts := h.fake.AddHistory(slacktest.Message{Channel: supportChan, Text: "the parent", BotID: slacktest.BotID, Metadata: json.RawMessage(meta)})
	h.fake.AddHistory(slacktest.Message{Channel: supportChan, Text: "people talking", User: aliceSlack})

	if err := h.ch.Follow(ctx, res.Message, conv); err != nil {
		t.Fatal(err)
	}
	if n := len(h.fake.Posts()); n != 0 {
		t.Fatalf("posted %d messages; the parent in history should be adopted, with the message it quotes", n)
	}
	next := h.customer("c1", "Zhang San", "hello?", time.Time{}).Message
	if err := h.ch.Follow(ctx, next, conv); err != nil {
		t.Fatal(err)
	}
	if th := h.fake.Thread(ts); len(th) != 1 || th[0].Text != "*Zhang San:* hello?" {
		t.Fatalf("thread of the adopted parent: %+v", th)
	}
	// The thread is known again: an agent's reply in it goes through.
	if code, _ := h.post(reply(aliceSlack, ts, "found you").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	ms := h.messages(conv.ID)
	if ms[len(ms)-1].Text != "found you" {
		t.Fatalf("reply in the adopted thread not stored: %+v", ms)
	}

	// Pending, but the post never happened: a parent is posted.
	other := h.customer("c2", "Li Si", "hi", time.Time{})
	if err := h.store.PutSetting(ctx, fmt.Sprintf("slack.slack.thread.%d", other.Conversation.ID), fmt.Sprintf("pending %d", time.Now().Unix())); err != nil {
		t.Fatal(err)
	}
	if err := h.ch.Follow(ctx, other.Message, other.Conversation); err != nil {
		t.Fatal(err)
	}
	if ps := h.fake.Parents(); len(ps) != 1 || !strings.Contains(ps[0].Text, "Li Si") || !strings.Contains(ps[0].Metadata, fmt.Sprintf(`"quoted_message_id":%d`, other.Message.ID)) {
		t.Fatalf("parents: %+v", ps)
	}
}

func TestDeletedParent(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	res := h.customer("c1", "Zhang San", "hello", time.Time{})
	if err := h.ch.Follow(ctx, res.Message, res.Conversation); err != nil {
		t.Fatal(err)
	}
	parent := h.fake.Parents()[0]
	h.fake.Delete(parent.TS) // someone deletes it in Slack
	next := h.customer("c1", "Zhang San", "still there?", time.Time{}).Message
	if err := h.ch.Follow(ctx, next, res.Conversation); err != nil {
		t.Fatal(err)
	}
	posts := h.fake.Posts()
	orphan := posts[len(posts)-1]
	// Replies in the thread of the message that replaced it reach the customer.
	if code, _ := h.post(reply(aliceSlack, orphan.TS, "yes").Payload(), time.Now(), 0); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	ms := h.messages(res.Conversation.ID)
	if ms[len(ms)-1].Text != "yes" {
		t.Fatalf("reply under the new parent not stored: %+v", ms)
	}
	later := h.customer("c1", "Zhang San", "great", time.Time{}).Message
	if err := h.ch.Follow(ctx, later, res.Conversation); err != nil {
		t.Fatal(err)
	}
	if th := h.fake.Thread(orphan.TS); len(th) != 1 || !strings.Contains(th[0].Text, "great") {
		t.Fatalf("thread of the new parent: %+v", th)
	}
}

func TestConsoleURL(t *testing.T) {
	if got := slack.ConsoleURL("https://support.example.com/", 12); got != "https://support.example.com/console/#/conversations/12" {
		t.Fatal(got)
	}
	if got := slack.ConsoleURL("", 12); got != "" {
		t.Fatal(got)
	}
}
