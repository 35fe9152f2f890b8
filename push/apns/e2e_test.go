package apns_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/fakeclock"
	"github.com/kefuhq/kefu/node"
	"github.com/kefuhq/kefu/push"
	"github.com/kefuhq/kefu/push/apns/apnstest"

	_ "github.com/kefuhq/kefu/channels/web"
)

// wait bounds each wait for something the node does in the background; it
// is a safety net against a hang, not a timing requirement.
const wait = 20 * time.Second

// TestAppResumesFromPush runs a node with the web channel and push.apns
// against the fake APNs: a visitor's app registers its device, receives a
// reply over its socket and acknowledges it, goes to the background (its
// socket drops), and three more replies arrive. One push reaches the fake
// APNs, properly signed, carrying the conversation and a sequence number of
// the gap; the app reconnects with its last sequence number and receives
// exactly the gap.
func TestAppResumesFromPush(t *testing.T) {
	pemBytes, key, err := apnstest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "AuthKey_"+keyID+".p8")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := apnstest.New(apnstest.Config{Key: &key.PublicKey, KeyID: keyID, TeamID: teamID, Topics: []string{topic}})
	defer srv.Close()

	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0"}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {offline_reply: ""}
agents:
  - {email: alice@example.com, name: Alice, password: secret-password}
channels:
  web: {enabled: true}
push:
  apns: {enabled: true, key_file: %q, key_id: %s, team_id: %s, topic: %s, environment: sandbox, host: %q, fallback_after: 5s}
`, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), keyFile, keyID, teamID, topic, srv.URL)
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clock := fakeclock.New(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln, Clock: clock, APNsClient: srv.Client()})
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
		case <-time.After(wait):
			t.Error("node did not stop")
		}
	}()
	base := "http://" + ln.Addr().String()
	svc := n.Service()
	alice, err := svc.Store().AgentByEmail(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}

	// The app starts a session, registers its device token and opens its
	// socket.
	wc := &webtest.Client{Base: base}
	sess, err := wc.StartSession(ctx, webtest.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	device := "00ff" + fmt.Sprintf("%060x", 42)
	register := func(topic string) (int, string) {
		t.Helper()
		body := bytes.NewBufferString(fmt.Sprintf(`{"token":%q,"topic":%q}`, device, topic))
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/visitor/devices", body)
		req.Header.Set("Authorization", "Bearer "+sess.Token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b)
	}
	// Before the visitor has written, nothing can be pushed to them: the
	// registration waits for the first message.
	if code, b := register(topic); code != http.StatusConflict {
		t.Fatalf("register before the first message: %d %s, want 409", code, b)
	}
	conn, err := wc.DialVisitor(ctx, sess.Token, webtest.Cursor{}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.Sync(wait); err != nil {
		t.Fatal(err)
	}
	if err := conn.SendText("c-1", 0, "Where is my order?", false); err != nil {
		t.Fatal(err)
	}
	ack, err := conn.Ack("c-1", wait)
	if err != nil {
		t.Fatal(err)
	}
	// Another app of the same Apple team is not this deployment's.
	if code, b := register("com.example.other"); code != http.StatusBadRequest || !strings.Contains(b, topic) {
		t.Fatalf("register for another topic: %d %s, want 400 naming %s", code, b, topic)
	}
	if code, b := register(topic); code != http.StatusOK {
		t.Fatalf("register device: %d %s", code, b)
	}
	convID := ack.Message.ConversationID
	if _, err := svc.Take(ctx, alice.ID, convID); err != nil {
		t.Fatal(err)
	}

	// A reply over the live socket, acknowledged by the app.
	first, err := svc.Reply(ctx, alice.ID, convID, core.Message{Kind: core.KindText, Text: "Let me check."})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WaitFor(wait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.ID == first.ID }); err != nil {
		t.Fatal(err)
	}
	if err := conn.Send(map[string]any{"type": "receipt", "conversation_id": convID, "seq": first.Seq, "status": "delivered"}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WaitFor(wait, func(f webtest.Frame) bool { return f.Type == "receipt" && f.Seq == first.Seq }); err != nil {
		t.Fatal(err) // (the app's own receipt comes back once it is stored)
	}
	// The app goes to the background: iOS cuts its socket. The replies
	// below are meant for an app without one: wait until the server has
	// seen it go (otherwise the fallback waits for an ack, fallback_after
	// on the fake clock, which the loop below does not advance to).
	_ = conn.Close()
	c, err := svc.Store().Conversation(ctx, convID)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(wait); svc.Presence().ContactConnected(c.ContactID); {
		if time.Now().After(deadline) {
			t.Fatal("the server never saw the app's socket close")
		}
		time.Sleep(time.Millisecond)
	}

	var gap []int64
	for _, text := range []string{"It left the warehouse.", "Tracking: 1Z999.", "Anything else?"} {
		m, err := svc.Reply(ctx, alice.ID, convID, core.Message{Kind: core.KindText, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		gap = append(gap, m.Seq)
	}

	// The fallback waits through its collapse window; move the clock past
	// it as soon as it waits, until a push arrives.
	var got apnstest.Request
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			now := clock.Now()
			if !clock.WaitFor(now.Add(push.DefaultCollapse), stop) {
				return
			}
			clock.Advance(push.DefaultCollapse)
		}
	}()
	select {
	case got = <-srv.Received():
	case <-time.After(wait):
		t.Fatal("no push reached the fake APNs")
	}
	if got.Problem != "" {
		t.Fatalf("the fake APNs refused the push: %s", got.Problem)
	}
	p := got.Payload
	if got.Token != device || got.Topic != topic || got.PushType != "alert" || got.CollapseID != fmt.Sprint(convID) ||
		p.ConversationID != convID || !slices.Contains(gap, p.Seq) || p.APS.Alert.Title != "Alice" {
		t.Fatalf("push %+v, want conversation %d and a seq among %v", got, convID, gap)
	}
	// Unread: the replies the app has not marked read (the first was only
	// delivered) since the customer's message.
	if p.APS.Badge == nil || *p.APS.Badge != 4 {
		t.Errorf("badge %s, want the 4 unread replies", got.Body)
	}

	// The user opens the notification: the app reconnects with the last
	// sequence number it had and receives exactly the gap.
	conn, err = wc.DialVisitor(ctx, sess.Token, webtest.Cursor{ConversationID: convID, LastSeq: first.Seq}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	replay, synced, err := conn.Sync(wait)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, f := range replay {
		if f.Type == "message" {
			seqs = append(seqs, f.Message.Seq)
		}
	}
	if !slices.Equal(seqs, gap) || synced.LastSeq == nil || *synced.LastSeq != gap[len(gap)-1] {
		t.Fatalf("resumed with %v (synced at %v), want exactly the gap %v", seqs, synced.LastSeq, gap)
	}
}
