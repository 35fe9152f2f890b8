package whatsapp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wt "github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/node"
)

// TestEndToEnd runs a real node from YAML with a WhatsApp channel pointed at
// the fake Graph API: a WhatsApp customer reaches an agent, gets the agent's
// replies in order at WhatsApp, and the delivery statuses Meta reports show
// on the messages. Then the access token is refused and /readyz says so.
func TestEndToEnd(t *testing.T) {
	api := wt.New(testPhoneID, testToken)
	defer api.Close()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0"}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {strategy: least_busy}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:
  wa:
    type: whatsapp
    enabled: true
    phone_number_id: %q
    access_token: %q
    app_secret: %q
    verify_token: %q
    api_base: %q
    templates:
      reopen: {name: reopen_conversation, language: en_US}
`, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), testPhoneID, testToken, testSecret, testVerify, api.URL)
	cfg, err := config.Parse("e2e.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln, Logger: quiet()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node stopped with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("node did not stop")
		}
	}()
	base := "http://" + ln.Addr().String()
	hook := base + "/webhooks/wa"
	ready := func() (int, string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "the node to be ready", func() bool { code, _ := ready(); return code == http.StatusOK })

	svc := n.Service()
	alice, err := svc.Store().AgentByEmail(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	release := svc.Presence().Connect(alice.ID) // Alice opens the console
	defer release()

	// Meta checks the webhook URL.
	resp, err := http.Get(hook + "?hub.mode=subscribe&hub.verify_token=" + testVerify + "&hub.challenge=42")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "42" {
		t.Fatalf("handshake: HTTP %d %q", resp.StatusCode, b)
	}

	// The customer writes, with a photo.
	api.AddMedia("m-photo", "image/jpeg", jpegSample(t))
	post := func(body []byte) {
		t.Helper()
		resp, err := wt.Post(http.DefaultClient, hook, testSecret, body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook: HTTP %d", resp.StatusCode)
		}
	}
	post(wt.Body(wt.Messages(testPhoneID, zhang,
		wt.Text("wamid.E1", "My parcel has not arrived"), wt.Image("wamid.E2", "m-photo", "image/jpeg", "the tracking page"))))
	convs, err := svc.Store().Conversations(ctx, core.ConversationFilter{Channel: "wa"})
	if err != nil || len(convs) != 1 {
		t.Fatalf("conversations: %+v %v", convs, err)
	}
	conv := convs[0]
	if conv.AssigneeID != alice.ID || conv.Status != core.StatusOpen || conv.ExternalID != zhang.WaID {
		t.Fatalf("conversation not routed to the online agent: %+v", conv)
	}
	ms, err := svc.Store().Messages(ctx, core.MessageQuery{ConversationID: conv.ID})
	if err != nil {
		t.Fatal(err)
	}
	var photo *core.Message
	for i := range ms {
		if ms[i].Kind == core.KindImage {
			photo = &ms[i]
		}
	}
	if photo == nil || photo.Media == nil || photo.Media.Type != "image/jpeg" || photo.Text != "the tracking page" {
		t.Fatalf("the photo was not stored: %+v", ms)
	}

	// Alice answers three times: they reach WhatsApp in order.
	var replies []core.Message
	for _, text := range []string{"Sorry to hear that!", "Let me check the carrier.", "It will arrive tomorrow."} {
		r, err := svc.Reply(ctx, alice.ID, conv.ID, core.Message{Kind: core.KindText, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		replies = append(replies, r)
	}
	sent := api.WaitSent(3, 10*time.Second)
	if len(sent) != 3 {
		t.Fatalf("%d messages reached WhatsApp, want 3", len(sent))
	}
	for i, s := range sent {
		if s.Message.To != zhang.WaID || s.Message.Text.Body != replies[i].Text || s.Bearer != testToken {
			t.Fatalf("message %d at WhatsApp: %s", i, s.Body)
		}
	}
	waitFor(t, "the replies marked sent with their wamids", func() bool {
		for i, r := range replies {
			m, err := svc.Store().Message(ctx, r.ID)
			if err != nil || m.Status != core.MsgSent || m.ExternalID != sent[i].WamID {
				return false
			}
		}
		return true
	})

	// Meta reports delivery, out of order for the second reply.
	now := time.Now()
	post(wt.Body(wt.Statuses(testPhoneID,
		wt.Status(sent[0].WamID, "delivered", zhang.WaID, now),
		wt.Status(sent[1].WamID, "read", zhang.WaID, now),
		wt.Status(sent[0].WamID, "read", zhang.WaID, now))))
	post(wt.Body(wt.Statuses(testPhoneID,
		wt.Status(sent[1].WamID, "delivered", zhang.WaID, now),
		wt.Status(sent[2].WamID, "delivered", zhang.WaID, now))))
	for i, want := range []core.MessageStatus{core.MsgRead, core.MsgRead, core.MsgDelivered} {
		m, err := svc.Store().Message(ctx, replies[i].ID)
		if err != nil || m.Status != want {
			t.Fatalf("reply %d: %s %v, want %s", i, m.Status, err, want)
		}
	}

	// The access token is revoked: the next reply fails with the reason,
	// and /readyz reports the channel unusable.
	api.FailNext(wt.TokenExpired)
	r, err := svc.Reply(ctx, alice.ID, conv.ID, core.Message{Kind: core.KindText, Text: "One more thing"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reply to fail", func() bool {
		m, err := svc.Store().Message(ctx, r.ID)
		return err == nil && m.Status == core.MsgFailed && m.FailReason == reasonToken
	})
	code, body := ready()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "channel wa:") || !strings.Contains(body, "access token") {
		t.Fatalf("readyz after 190: HTTP %d %q", code, body)
	}
}
