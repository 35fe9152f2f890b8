package slack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/slack"
	"github.com/kefuhq/kefu/channels/slack/slacktest"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/node"

	// The customer channel and the console's API.
	_ "github.com/kefuhq/kefu/channels/telegram"
	_ "github.com/kefuhq/kefu/channels/web"
)

const (
	tgToken  = "123456:TEST-token_for-kefu"
	tgSecret = "tg-webhook-secret_1"
)

// TestEndToEnd runs a real node with a Telegram customer channel, the web
// channel's API, and Slack: a Telegram customer's messages appear in one
// Slack thread, Alice's reply in that thread reaches the customer through
// the Telegram API, and the whole conversation is in the store and the
// console's history.
func TestEndToEnd(t *testing.T) {
	fakeSlack := slacktest.New(botToken, appToken)
	t.Cleanup(fakeSlack.Close)
	fakeTG := telegramtest.New(tgToken)
	t.Cleanup(fakeTG.Close)
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0", public_url: %q}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {offline_reply: ""}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password, slack_user: %s}
  - {email: bob@example.com, name: Bob, password: bob-password}
channels:
  web: {enabled: true}
  tg: {type: telegram, enabled: true, token: %q, mode: webhook, webhook_secret: %q, api_base: %q}
  slack: {enabled: true, bot_token: %q, signing_secret: %q, channel: %s, api_base: %q}
`, publicURL, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), aliceSlack,
		tgToken, tgSecret, fakeTG.URL, botToken, signingSecret, supportChan, fakeSlack.APIURL())
	cfg, err := config.Parse("e2e.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln})
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
	base := "http://" + ln.Addr().String()
	st := n.Service().Store()
	waitFor(t, "the node to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// The follower starts from "now" on its first start: wait until it has.
	waitFor(t, "the Slack follower's cursor", func() bool {
		_, err := st.Setting(context.Background(), "follow.slack")
		return err == nil
	})

	// A Telegram customer writes twice.
	const chatID = 4242
	for _, text := range []string{"Hello from Telegram, order #77 is late", "Is anyone there?"} {
		code, _, err := fakeTG.Post(base+"/webhooks/tg", tgSecret, telegramtest.Update(telegramtest.Text(chatID, text)))
		if err != nil || code != http.StatusOK {
			t.Fatalf("telegram webhook: HTTP %d %v", code, err)
		}
	}
	convs, err := st.Conversations(context.Background(), core.ConversationFilter{Channel: "tg"})
	if err != nil || len(convs) != 1 {
		t.Fatalf("conversations: %+v %v", convs, err)
	}
	conv := convs[0]

	// Both appear in one Slack thread.
	fakeSlack.WaitPosts(2, 15*time.Second)
	parents := fakeSlack.Parents()
	if len(parents) != 1 {
		t.Fatalf("parents: %+v", parents)
	}
	parent := parents[0]
	for _, want := range []string{conv.Number(), "Zhang San", "via tg", "Hello from Telegram, order #77 is late",
		"Assignee: nobody yet", fmt.Sprintf("%s/console/#/conversations/%d", publicURL, conv.ID)} {
		if !strings.Contains(parent.Text, want) {
			t.Errorf("parent lacks %q:\n%s", want, parent.Text)
		}
	}
	thread := fakeSlack.Thread(parent.TS)
	if len(thread) != 1 || thread[0].Text != "*Zhang San:* Is anyone there?" {
		t.Fatalf("thread: %+v", thread)
	}
	waitFor(t, "the thread mapping", func() bool {
		v, err := st.Setting(context.Background(), fmt.Sprintf("slack.slack.thread.%d", conv.ID))
		return err == nil && !strings.HasPrefix(v, "pending")
	})

	// Alice answers in the thread; it reaches the customer on Telegram.
	ev := slacktest.Event{Channel: supportChan, User: aliceSlack, Text: "Sorry! It ships today &amp; arrives Friday.", ThreadTS: parent.TS}
	resp, err := slacktest.PostEvent(http.DefaultClient, base+slack.EventsPath("slack"), signingSecret, ev.Payload(), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events endpoint: HTTP %d", resp.StatusCode)
	}
	sent := fakeTG.WaitSent(1, 15*time.Second)
	if len(sent) != 1 || sent[0].Fields["chat_id"] != fmt.Sprint(chatID) || sent[0].Fields["text"] != "Sorry! It ships today & arrives Friday." {
		t.Fatalf("telegram sends: %+v", sent)
	}
	// The reply took the conversation for Alice; Slack hears of it, not of
	// the reply itself (Alice's own message is already in the thread).
	waitFor(t, "the assignment in the thread", func() bool {
		th := fakeSlack.Thread(parent.TS)
		return len(th) == 2 && strings.Contains(th[1].Text, "Assigned to <@"+aliceSlack+">")
	})

	// The whole conversation, in the store…
	alice, err := st.AgentByEmail(context.Background(), "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := st.Messages(context.Background(), core.MessageQuery{ConversationID: conv.ID})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, describe(m))
	}
	want := []string{
		"contact: Hello from Telegram, order #77 is late",
		"contact: Is anyone there?",
		fmt.Sprintf("event assigned to %d", alice.ID),
		fmt.Sprintf("agent %d: Sorry! It ships today & arrives Friday.", alice.ID),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("conversation in the store:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	waitFor(t, "the reply marked sent", func() bool {
		m, err := st.Message(context.Background(), ms[3].ID)
		return err == nil && m.Status == core.MsgSent
	})

	// … and in the console's history.
	token := login(t, base, "bob@example.com", "bob-password")
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/conversations/%d/messages", base, conv.ID), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hist struct {
		Messages []core.Message `json:"messages"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&hist) != nil {
		t.Fatalf("history: HTTP %d", resp.StatusCode)
	}
	got = got[:0]
	for _, m := range hist.Messages {
		got = append(got, describe(m))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("console history:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func describe(m core.Message) string {
	switch {
	case m.Kind == core.KindEvent:
		return fmt.Sprintf("event %s to %d", m.Event.Type, m.Event.AgentID)
	case m.SenderKind == core.SenderContact:
		return "contact: " + m.Text
	}
	return fmt.Sprintf("%s %d: %s", m.SenderKind, m.SenderID, m.Text)
}

func login(t *testing.T, base, email, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || out.Token == "" {
		t.Fatalf("login: HTTP %d", resp.StatusCode)
	}
	return out.Token
}
