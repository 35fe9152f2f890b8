package web_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/node"
)

// End-to-end tests of the realtime protocol against a real node on a
// loopback port: SQLite, the in-process bus, the web channel (as
// web.RealtimeTestType, so that tests can reach the instance) and two
// agents.

const (
	rtOrigin   = "https://shop.example.com"
	rtIdSecret = "site-identity-secret"
	rtWait     = 10 * time.Second // how long a test waits for what must come
)

type rtNode struct {
	t     *testing.T
	base  string
	svc   *core.Service
	store core.Store
	ch    *web.Channel
	alice core.Agent
	bob   core.Agent
	cl    *webtest.Client // a browser page on rtOrigin
	stop  func()          // stops the node (once)
}

// startRT runs a node. extra is YAML spliced into the web channel's
// section (e.g. limits).
func startRT(t *testing.T, extra string) *rtNode {
	t.Helper()
	return startRTRouting(t, extra, "strategy: least_busy, offline_reply: \"\"")
}

// startRTRouting runs a node with the given routing section.
func startRTRouting(t *testing.T, extra, routing string) *rtNode {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0"}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {%s}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
  - {email: bob@example.com, name: Bob, password: bob-password}
channels:
  web:
    type: %s
    enabled: true
    allowed_origins: [%q]
    identity_secret: %q
    send_queue: 64
    agent_send_queue: 64
%s`, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), routing, web.RealtimeTestType, rtOrigin, rtIdSecret, extra)
	if !strings.Contains(extra, "ping_interval:") {
		yaml += "    ping_interval: 200ms\n"
	}
	if !strings.Contains(extra, "long_poll_timeout:") {
		yaml += "    long_poll_timeout: 3s\n"
	}
	if !strings.Contains(extra, "limits:") {
		yaml += "    limits: {requests_per_minute: 10000, messages_per_minute: 10000, conversations_per_hour: 10000}\n"
	}
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
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
	h := &rtNode{t: t, base: "http://" + ln.Addr().String(), svc: n.Service(), store: n.Service().Store()}
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("node stopped with %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("node did not stop")
			}
		})
	}
	t.Cleanup(h.stop)
	h.ch = web.RealtimeTestChannel(h.svc)
	if h.ch == nil {
		t.Fatal("no web channel instance")
	}
	h.cl = &webtest.Client{Base: h.base, Origin: rtOrigin}
	waitUntil(t, "node ready", func() bool {
		resp, err := http.Get(h.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	h.alice = h.agent("alice@example.com")
	h.bob = h.agent("bob@example.com")
	return h
}

func (h *rtNode) agent(email string) core.Agent {
	h.t.Helper()
	a, err := h.store.AgentByEmail(context.Background(), email)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// token logs an agent in (a planted session, valid for an hour).
func (h *rtNode) token(a core.Agent) string {
	h.t.Helper()
	tok, err := web.NewAgentSession(context.Background(), h.store, a.ID, time.Now().Add(time.Hour))
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// session starts an anonymous visitor session.
func (h *rtNode) session(name string) *webtest.Session {
	h.t.Helper()
	s, err := h.cl.StartSession(context.Background(), webtest.SessionRequest{Name: name})
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// agentConn connects an agent over WebSocket and reads up to synced.
func (h *rtNode) agentConn(tok string, cursor *int64) (*webtest.Conn, []webtest.Frame, webtest.Frame) {
	h.t.Helper()
	c, err := h.cl.DialAgent(context.Background(), tok, cursor, false, webtest.DialOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	replay, synced, err := c.Sync(rtWait)
	if err != nil {
		h.t.Fatal(err)
	}
	return c, replay, synced
}

// answeredVisitor connects Alice's console, then a visitor who says "hi",
// receives her "hello" and disconnects. It returns her connection, the
// visitor's session, conversation and cursor after "hello".
func (h *rtNode) answeredVisitor() (alice *webtest.Conn, s *webtest.Session, conv int64, cur webtest.Cursor) {
	h.t.Helper()
	alice, _, _ = h.agentConn(h.token(h.alice), nil)
	waitUntil(h.t, "alice available", func() bool { return h.svc.Presence().Connected(h.alice.ID) })
	s = h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	check(vc.SendText("v-1", 0, "hi", false))
	conv = must(vc.Ack("v-1", rtWait)).Message.ConversationID
	check(alice.SendText("a-1", conv, "hello", false))
	must(alice.Ack("a-1", rtWait))
	for {
		f := must(vc.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" }))
		cur.Advance(f)
		if f.Message.Text == "hello" {
			break
		}
	}
	vc.Close()
	return alice, s, conv, cur
}

// visitorConn connects a visitor over WebSocket and reads up to synced.
func (h *rtNode) visitorConn(tok string, cur webtest.Cursor) (*webtest.Conn, []webtest.Frame, webtest.Frame) {
	h.t.Helper()
	c, err := h.cl.DialVisitor(context.Background(), tok, cur, webtest.DialOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	replay, synced, err := c.Sync(rtWait)
	if err != nil {
		h.t.Fatal(err)
	}
	return c, replay, synced
}

func (h *rtNode) counts() (convs, msgs int) {
	h.t.Helper()
	ms, err := h.store.Feed(context.Background(), 0, 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	cs, err := h.store.Conversations(context.Background(), core.ConversationFilter{Limit: 500})
	if err != nil {
		h.t.Fatal(err)
	}
	return len(cs), len(ms)
}

var waitUntil = wait.For

// must and check stop the test on an error; every test defers guard.
func must[T any](v T, err error) T {
	if err != nil {
		panic(mustFailed{err})
	}
	return v
}

func check(err error) {
	if err != nil {
		panic(mustFailed{err})
	}
}

type mustFailed struct{ err error }

// guard turns a failed must into t.Fatal.
func guard(t *testing.T) {
	if r := recover(); r != nil {
		if mf, ok := r.(mustFailed); ok {
			t.Helper()
			t.Fatalf("%v", mf.err)
		}
		panic(r)
	}
}

// pollUntil polls until a message frame with text arrives and returns
// every frame received meanwhile.
func pollUntil(t *testing.T, p *webtest.Poller, text string) []webtest.Frame {
	t.Helper()
	var all []webtest.Frame
	deadline := time.Now().Add(rtWait)
	for time.Now().Before(deadline) {
		fs := must(p.Poll(context.Background()))
		all = append(all, fs...)
		for _, f := range fs {
			if f.Type == "message" && f.Message.Text == text {
				return all
			}
		}
	}
	t.Fatalf("no message %q by long polling; got %d frames", text, len(all))
	return nil
}

func texts(fs []webtest.Frame) []string {
	var out []string
	for _, f := range fs {
		if f.Type == "message" && f.Message.Kind == "text" {
			out = append(out, f.Message.Text)
		}
	}
	return out
}

func TestVisitorsOverBothTransportsReachAnAgent(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	alice, _, _ := h.agentConn(h.token(h.alice), nil)
	waitUntil(t, "alice available", func() bool { return h.svc.Presence().Connected(h.alice.ID) })

	// A visitor over WebSocket.
	ws := h.session("Web Visitor")
	vc, replay, _ := h.visitorConn(ws.Token, webtest.Cursor{})
	if len(replay) != 0 {
		t.Fatalf("a new visitor was replayed %d frames", len(replay))
	}
	check(vc.SendText("w-1", 0, "Hello over WebSocket", false))
	ack := must(vc.Ack("w-1", rtWait))
	convWS := ack.Message.ConversationID
	if ack.Message.Seq != 1 || ack.Message.Text != "Hello over WebSocket" || ack.Duplicate {
		t.Fatalf("ack = %s", ack.Raw)
	}

	// A visitor over long polling.
	lp := h.session("Polling Visitor")
	p := &webtest.Poller{Client: h.cl, Token: lp.Token}
	lpAck := must(p.SendText(ctx, "l-1", 0, "Hello over long polling", false))
	convLP := lpAck.Message.ConversationID
	if convLP == convWS {
		t.Fatal("two visitors share a conversation")
	}

	// Alice gets both conversations, routed to her.
	for _, conv := range []int64{convWS, convLP} {
		f := must(alice.WaitFor(rtWait, func(f webtest.Frame) bool {
			return f.Type == "message" && f.Message.ConversationID == conv && f.Message.SenderKind == "contact"
		}))
		if f.Conversation == nil || f.Conversation.ID != conv {
			t.Fatalf("agent message frame without its conversation: %s", f.Raw)
		}
		must(alice.WaitFor(rtWait, func(f webtest.Frame) bool {
			return f.Type == "message" && f.Message.ConversationID == conv && f.Message.Event != nil && f.Message.Event.Type == "assigned"
		}))
	}
	// She replies to each.
	check(alice.SendText("r-ws", convWS, "Hi web visitor", false))
	must(alice.Ack("r-ws", rtWait))
	check(alice.SendText("r-lp", convLP, "Hi polling visitor", false))
	must(alice.Ack("r-lp", rtWait))

	got := must(vc.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "Hi web visitor" }))
	if got.Message.SenderKind != "agent" || got.Message.SenderName != "Alice" || got.Conversation != nil {
		t.Fatalf("visitor's view of the reply: %s", got.Raw)
	}
	frames := pollUntil(t, p, "Hi polling visitor")
	for _, f := range frames {
		if f.Type == "message" && f.Message.Visibility != "" {
			t.Fatalf("a visitor was shown an agent's view: %s", f.Raw)
		}
	}
}

func TestVisitorResumesWithExactlyWhatItMissed(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	alice, s, conv, cur := h.answeredVisitor()

	for i, text := range []string{"one", "two", "three"} {
		check(alice.SendText(fmt.Sprint("m-", i), conv, text, false))
		must(alice.Ack(fmt.Sprint("m-", i), rtWait))
		if i == 1 {
			check(alice.SendText("note", conv, "internal: VIP", true))
			must(alice.Ack("note", rtWait))
		}
	}
	vc2, replay, synced := h.visitorConn(s.Token, cur)
	if got := texts(replay); strings.Join(got, ",") != "one,two,three" || len(replay) != 3 {
		t.Fatalf("replay = %v (%d frames), want exactly one, two, three", got, len(replay))
	}
	for i := 1; i < len(replay); i++ {
		if replay[i].Message.Seq <= replay[i-1].Message.Seq {
			t.Fatalf("replay out of order: %s then %s", replay[i-1].Raw, replay[i].Raw)
		}
	}
	if synced.ConversationID != conv || *synced.LastSeq != replay[2].Message.Seq {
		t.Fatalf("synced = %s", synced.Raw)
	}
	// Live frames follow with nothing repeated at the seam.
	check(alice.SendText("m-4", conv, "four", false))
	must(alice.Ack("m-4", rtWait))
	next := must(vc2.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" }))
	if next.Message.Text != "four" {
		t.Fatalf("after the replay came %s, want four", next.Raw)
	}
}

// A visitor reconnecting with nothing missed (the widget after a dropped
// socket) gets an empty replay without a message query; one that missed a
// message gets exactly it; live messages follow either way.
func TestVisitorReconnectingUpToDateQueriesNoMessages(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ch := web.RealtimeTestChannel(h.svc)
	alice, s, conv, cur := h.answeredVisitor()

	before := ch.MessageQueries()
	vc2, replay, synced := h.visitorConn(s.Token, cur)
	if len(replay) != 0 || synced.ConversationID != conv || *synced.LastSeq != cur.LastSeq {
		t.Fatalf("up to date: replay %d frames, synced %s; want none and conversation %d seq %d", len(replay), synced.Raw, conv, cur.LastSeq)
	}
	if n := ch.MessageQueries() - before; n != 0 {
		t.Fatalf("an up-to-date reconnect made %d message queries, want 0", n)
	}
	check(alice.SendText("a-2", conv, "still here", false))
	must(alice.Ack("a-2", rtWait))
	if f := must(vc2.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" })); f.Message.Text != "still here" {
		t.Fatalf("live after an empty replay: %s", f.Raw)
	}
	vc2.Close()

	_, replay, _ = h.visitorConn(s.Token, cur) // one behind now
	if got := texts(replay); len(got) != 1 || got[0] != "still here" {
		t.Fatalf("one behind: replay %v, want [still here]", got)
	}
}

func TestVisitorSwitchesTransportsMidConversation(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	alice, _, _ := h.agentConn(h.token(h.alice), nil)
	waitUntil(t, "alice available", func() bool { return h.svc.Presence().Connected(h.alice.ID) })
	s := h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	check(vc.SendText("v-1", 0, "start", false))
	conv := must(vc.Ack("v-1", rtWait)).Message.ConversationID

	var sent, seen []string
	var cur webtest.Cursor
	seenIDs := map[int64]bool{}
	record := func(fs []webtest.Frame) {
		for _, f := range fs {
			if f.Type != "message" {
				continue
			}
			if seenIDs[f.Message.ID] {
				t.Fatalf("message %d delivered twice: %s", f.Message.ID, f.Raw)
			}
			seenIDs[f.Message.ID] = true
			cur.Advance(f)
			if f.Message.SenderKind == "agent" {
				seen = append(seen, f.Message.Text)
			}
		}
	}
	send := func(text string) {
		sent = append(sent, text)
		check(alice.SendText("id-"+text, conv, text, false))
		must(alice.Ack("id-"+text, rtWait))
	}
	// On WebSocket.
	send("a1")
	send("a2")
	for len(seen) < 2 {
		record([]webtest.Frame{must(vc.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" }))})
	}
	// Mid-conversation, the socket dies while replies keep coming.
	vc.Close()
	send("a3")
	send("a4")
	// Long polling from the WebSocket's cursor.
	p := &webtest.Poller{Client: h.cl, Token: s.Token, Cursor: cur}
	for len(seen) < 4 {
		record(must(p.Poll(ctx)))
	}
	send("a5")
	for len(seen) < 5 {
		record(must(p.Poll(ctx)))
	}
	cur = p.Cursor
	send("a6")
	// And back to WebSocket from the long poll's cursor.
	vc2, replay, _ := h.visitorConn(s.Token, cur)
	record(replay)
	send("a7")
	for len(seen) < 7 {
		record([]webtest.Frame{must(vc2.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" }))})
	}
	if strings.Join(seen, ",") != strings.Join(sent, ",") {
		t.Fatalf("visitor saw %v, agent sent %v", seen, sent)
	}
}

func TestSameClientIDIsStoredOnceAndAckedTwice(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	s := h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	check(vc.SendText("same-id", 0, "only once", false))
	first := must(vc.Ack("same-id", rtWait))
	check(vc.SendText("same-id", 0, "only once", false))
	second := must(vc.Ack("same-id", rtWait))
	if first.Duplicate || !second.Duplicate || first.Message.ID != second.Message.ID || first.Message.Seq != second.Message.Seq {
		t.Fatalf("acks: %s / %s", first.Raw, second.Raw)
	}
	// Over long polling, the same id is still the same message.
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	third := must(p.SendText(ctx, "same-id", 0, "only once", false))
	if !third.Duplicate || third.Message.ID != first.Message.ID {
		t.Fatalf("long-poll ack: %s", third.Raw)
	}
	// An agent's too.
	tok := h.token(h.alice)
	alice, _, _ := h.agentConn(tok, nil)
	conv := first.Message.ConversationID
	check(alice.SendText("agent-id", conv, "reply once", false))
	a1 := must(alice.Ack("agent-id", rtWait))
	check(alice.SendText("agent-id", conv, "reply once", false))
	a2 := must(alice.Ack("agent-id", rtWait))
	if a1.Duplicate || !a2.Duplicate || a1.Message.ID != a2.Message.ID {
		t.Fatalf("agent acks: %s / %s", a1.Raw, a2.Raw)
	}
	// Its id again, as a note or in another conversation, is another
	// message: refused, as the REST API refuses it, and nothing is stored.
	other := must((&webtest.Poller{Client: h.cl, Token: h.session("").Token}).SendText(ctx, "o", 0, "hi", false)).Message.ConversationID
	for _, tc := range []struct {
		conv int64
		note bool
	}{{conv, true}, {other, false}} {
		check(alice.SendText("agent-id", tc.conv, "not the same message", tc.note))
		f := must(alice.WaitFor(rtWait, func(f webtest.Frame) bool { return f.ID == "agent-id" }))
		if f.Type != "error" || f.Error == nil || f.Error.Code != "conflict" {
			t.Errorf("id reused in #%d (note %v): %s, want a conflict error", tc.conv, tc.note, f.Raw)
		}
	}
	ms := must(h.store.Messages(ctx, core.MessageQuery{ConversationID: conv}))
	n := map[string]int{}
	for _, m := range ms {
		n[m.Text]++
	}
	if n["only once"] != 1 || n["reply once"] != 1 || n["not the same message"] != 0 {
		t.Fatalf("stored %v", n)
	}
	for _, m := range must(h.store.Messages(ctx, core.MessageQuery{ConversationID: other})) {
		if m.SenderKind == core.SenderAgent {
			t.Fatalf("the other conversation got an agent message: %+v", m)
		}
	}
}

func TestAgentResumesWithOneCursorAcrossConversations(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	tok := h.token(h.alice)
	alice, _, synced := h.agentConn(tok, nil)
	// Two visitors start conversations while Alice is connected.
	v1, v2 := h.session(""), h.session("")
	p1 := &webtest.Poller{Client: h.cl, Token: v1.Token}
	p2 := &webtest.Poller{Client: h.cl, Token: v2.Token}
	c1 := must(p1.SendText(ctx, "x", 0, "first visitor", false)).Message.ConversationID
	c2 := must(p2.SendText(ctx, "y", 0, "second visitor", false)).Message.ConversationID
	cursor := *synced.Cursor
	for _, want := range []string{"first visitor", "second visitor"} {
		f := must(alice.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == want }))
		cursor = max(cursor, f.Message.ID)
	}
	for {
		f, err := alice.WaitFor(200*time.Millisecond, func(f webtest.Frame) bool { return f.Type == "message" })
		if err != nil {
			break
		}
		cursor = max(cursor, f.Message.ID)
	}
	alice.Close()

	// While she is away: messages in both conversations, a note by Bob.
	bob := h.token(h.bob)
	bc, _, _ := h.agentConn(bob, nil)
	must(p1.SendText(ctx, "x2", 0, "still there?", false))
	check(bc.SendText("b1", c2, "Bob here", false))
	must(bc.Ack("b1", rtWait))
	check(bc.SendText("b2", c1, "note about #1", true))
	must(bc.Ack("b2", rtWait))
	must(p2.SendText(ctx, "y2", 0, "thanks Bob", false))

	want := must(h.store.Feed(ctx, cursor, 1000))
	if len(want) < 4 {
		t.Fatalf("only %d messages after the cursor", len(want))
	}
	c := cursor
	_, replay, synced2 := h.agentConn(tok, &c)
	if len(replay) != len(want) {
		t.Fatalf("replayed %d frames, want %d", len(replay), len(want))
	}
	for i, f := range replay {
		if f.Type != "message" || f.Message.ID != want[i].ID {
			t.Fatalf("replay[%d] = %s, want message %d", i, f.Raw, want[i].ID)
		}
	}
	if *synced2.Cursor != want[len(want)-1].ID {
		t.Fatalf("synced cursor %d, want %d", *synced2.Cursor, want[len(want)-1].ID)
	}
	// The same over long polling, in pages.
	lp := &webtest.Poller{Client: h.cl, Token: tok, Agent: true, Cursor: webtest.Cursor{Cursor: &cursor}}
	fs := must(lp.Poll(ctx))
	if len(fs) != len(want) || *lp.Cursor.Cursor != want[len(want)-1].ID {
		t.Fatalf("long poll replayed %d frames to cursor %d", len(fs), *lp.Cursor.Cursor)
	}
}

// An internal note after the last public message: the resume's cursor
// passes it, so that the resume after that has nothing to query.
func TestResumeCursorPassesInternalEntries(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ch := web.RealtimeTestChannel(h.svc)
	alice, s, conv, cur := h.answeredVisitor()
	check(alice.SendText("n-1", conv, "internal: VIP", true))
	note := must(alice.Ack("n-1", rtWait)).Message

	_, replay, synced := h.visitorConn(s.Token, cur)
	if len(replay) != 0 || *synced.LastSeq != note.Seq {
		t.Fatalf("resume past a note: replay %d frames, synced %s; want none and last_seq %d", len(replay), synced.Raw, note.Seq)
	}
	before := ch.MessageQueries()
	_, replay, _ = h.visitorConn(s.Token, webtest.Cursor{ConversationID: conv, LastSeq: *synced.LastSeq})
	if n := ch.MessageQueries() - before; len(replay) != 0 || n != 0 {
		t.Fatalf("the resume after: replay %d frames, %d message queries; want none", len(replay), n)
	}
}

// What happens in a resumed conversation while the resume reads the store
// reaches the connection: a receipt and typing are not replayed later.
func TestResumeHearsReceiptsAndTypingDuringTheRead(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	ch := web.RealtimeTestChannel(h.svc)
	s := h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	check(vc.SendText("v-1", 0, "hi", false))
	hi := must(vc.Ack("v-1", rtWait)).Message
	vc.Close()

	ch.AfterNextConversationsRead(func() {
		check(h.svc.MarkUpTo(ctx, core.Receipt{ConversationID: hi.ConversationID, UpToSeq: hi.Seq, Status: core.MsgRead}))
		h.svc.Typing(ctx, core.Typing{ConversationID: hi.ConversationID, SenderKind: core.SenderAgent, SenderID: h.alice.ID, On: true})
		time.Sleep(200 * time.Millisecond) // both are dispatched before the resume goes on
	})
	vc2, replay, _ := h.visitorConn(s.Token, webtest.Cursor{ConversationID: hi.ConversationID, LastSeq: hi.Seq})
	if len(replay) != 0 {
		t.Fatalf("replay %d frames, want none", len(replay))
	}
	must(vc2.Expect("receipt", rtWait))
	must(vc2.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "typing" }))
}

// A long poll that replays an earlier conversation and a newer one moves
// the cursor to the newer: a message in the earlier one committed after
// its part of the replay was read, and dispatched before the answer, still
// comes with it.
func TestLongPollKeepsALateMessageOfAnEarlierConversation(t *testing.T) {
	defer guard(t)
	h := startRTRouting(t, "", "strategy: least_busy, offline_reply: \"\", reopen_within: 1ns")
	ctx := context.Background()
	ch := web.RealtimeTestChannel(h.svc)
	s := h.session("")
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	ack := must(p.SendText(ctx, "v-1", 0, "first", false)).Message
	first, firstSeq := ack.ConversationID, ack.Seq
	must(h.svc.Close(ctx, h.alice.ID, first))
	second := must(p.SendText(ctx, "v-2", 0, "second", false)).Message.ConversationID
	if second == first {
		t.Fatal("the second message reopened the first conversation")
	}

	ch.AfterNextMessagesRead(func() { // the first conversation's part was read
		// (An agent's reply there is refused; an automatic message is not.)
		if _, err := h.svc.BotMessage(ctx, first, core.Message{Kind: core.KindText, Text: "late"}); err != nil {
			t.Errorf("bot message to %d: %v", first, err)
		}
		time.Sleep(200 * time.Millisecond) // dispatched before the poll answers
	})
	lp := &webtest.Poller{Client: h.cl, Token: s.Token, Cursor: webtest.Cursor{ConversationID: first, LastSeq: firstSeq}}
	got := texts(must(lp.Poll(ctx)))
	if !slices.Contains(got, "second") || !slices.Contains(got, "late") {
		t.Fatalf("poll answered %v; want the newer conversation's messages and the late one", got)
	}
	if lp.Cursor.ConversationID != second {
		t.Fatalf("cursor %+v, want the newer conversation %d", lp.Cursor, second)
	}
}

// A hello naming another visitor's conversation is refused, and none of
// the asking visitor's connections hears that conversation afterwards.
func TestHelloWithAnotherVisitorsConversationLeaksNothing(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	other := h.session("")
	op := &webtest.Poller{Client: h.cl, Token: other.Token}
	otherConv := must(op.SendText(ctx, "o-1", 0, "someone else's", false)).Message.ConversationID

	s := h.session("")
	live, _, _ := h.visitorConn(s.Token, webtest.Cursor{}) // another tab of the same visitor
	c := must(h.cl.DialVisitor(ctx, s.Token, webtest.Cursor{ConversationID: otherConv}, webtest.DialOptions{}))
	if f := must(c.Expect("error", rtWait)); f.Error.Code != "not_found" {
		t.Fatalf("hello: %s", f.Raw)
	}
	if code := must(c.Closed(rtWait)); code != 4004 {
		t.Fatalf("closed with %d, want 4004", code)
	}
	must(op.SendText(ctx, "o-2", otherConv, "private", false))
	// A message of the visitor's own, sent after: once it has arrived, the
	// other's would have too.
	sp := &webtest.Poller{Client: h.cl, Token: s.Token}
	must(sp.SendText(ctx, "s-1", 0, "marker", false))
	must(live.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "marker" }))
	if f, err := live.WaitFor(0, func(f webtest.Frame) bool { return f.Message != nil && f.Message.ConversationID == otherConv }); err == nil {
		t.Fatalf("another visitor's conversation reached this visitor: %s", f.Raw)
	}
}

func TestBadInputIsRefusedAndStoresNothing(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	other := h.session("")
	op := &webtest.Poller{Client: h.cl, Token: other.Token}
	otherConv := must(op.SendText(ctx, "o", 0, "someone else's", false)).Message.ConversationID
	// (Bob connecting takes the waiting conversation: before the count.)
	t.Run("a session revoked while connected", func(t *testing.T) {
		defer guard(t)
		tok := h.token(h.bob)
		c, _, _ := h.agentConn(tok, nil)
		check(web.RevokeAgentSession(ctx, h.store, tok))
		if code := must(c.Closed(rtWait)); code != 4001 {
			t.Fatalf("closed with %d, want 4001", code)
		}
	})
	convs0, msgs0 := h.counts()

	s := h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	t.Run("malformed frame", func(t *testing.T) {
		defer guard(t)
		for _, bad := range []string{`{"type":`, `[1,2]`, `{"type":"send","id":7,"text":"x"}`, `{"type":"send","text":"no id"}`, `{"type":"fly"}`} {
			check(vc.SendRaw([]byte(bad)))
			f := must(vc.Expect("error", rtWait))
			if f.Error.Code != "bad_frame" && f.Error.Code != "unknown_type" {
				t.Errorf("%s: error %s", bad, f.Raw)
			}
		}
		// Still usable.
		check(vc.Send(map[string]string{"type": "ping"}))
		must(vc.Expect("pong", rtWait))
	})
	t.Run("frame over max_frame_bytes closes with 1009", func(t *testing.T) {
		defer guard(t)
		c, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
		big := `{"type":"send","id":"big","text":"` + strings.Repeat("x", 70<<10) + `"}`
		_ = c.SendRaw([]byte(big))
		if code := must(c.Closed(rtWait)); code != 1009 {
			t.Fatalf("closed with %d, want 1009", code)
		}
	})
	t.Run("bad agent tokens", func(t *testing.T) {
		defer guard(t)
		expired := must(web.NewAgentSession(ctx, h.store, h.alice.ID, time.Now().Add(-time.Minute)))
		revoked := h.token(h.alice)
		check(web.RevokeAgentSession(ctx, h.store, revoked))
		for name, tok := range map[string]string{"garbage": "kfa_nope", "expired": expired, "revoked": revoked, "visitor token": s.Token} {
			// In the handshake's Authorization header: 401.
			_, err := h.cl.DialAgent(ctx, tok, nil, true, webtest.DialOptions{})
			var de *webtest.DialError
			if !asDialError(err, &de) || de.Status != http.StatusUnauthorized {
				t.Errorf("%s in header: %v, want HTTP 401", name, err)
			}
			// In hello: an unauthorized error frame, then close 4001.
			c, err := h.cl.DialAgent(ctx, tok, nil, false, webtest.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f := must(c.Expect("error", rtWait))
			if f.Error.Code != "unauthorized" {
				t.Errorf("%s: %s", name, f.Raw)
			}
			if code := must(c.Closed(rtWait)); code != 4001 {
				t.Errorf("%s: closed with %d, want 4001", name, code)
			}
			// Long polling: 401.
			lp := &webtest.Poller{Client: h.cl, Token: tok, Agent: true}
			if _, err := lp.Poll(ctx); webtest.StatusOf(err) != http.StatusUnauthorized {
				t.Errorf("%s long poll: %v, want 401", name, err)
			}
		}
	})
	t.Run("another visitor's conversation is not found", func(t *testing.T) {
		defer guard(t)
		c, err := h.cl.DialVisitor(ctx, s.Token, webtest.Cursor{ConversationID: otherConv}, webtest.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f := must(c.Expect("error", rtWait))
		if f.Error.Code != "not_found" {
			t.Errorf("hello: %s", f.Raw)
		}
		if code := must(c.Closed(rtWait)); code != 4004 {
			t.Errorf("closed with %d, want 4004", code)
		}
		if _, err := h.cl.History(ctx, s.Token, otherConv, 0, 0); webtest.StatusOf(err) != http.StatusNotFound {
			t.Errorf("history: %v, want 404", err)
		}
		p := &webtest.Poller{Client: h.cl, Token: s.Token, Cursor: webtest.Cursor{ConversationID: otherConv}}
		if _, err := p.Poll(ctx); webtest.StatusOf(err) != http.StatusNotFound {
			t.Errorf("long poll: %v, want 404", err)
		}
		rf := must(p.Post(ctx, map[string]any{"type": "receipt", "conversation_id": otherConv, "seq": 1, "status": "read"}))
		if len(rf) != 1 || rf[0].Error == nil || rf[0].Error.Code != "not_found" {
			t.Errorf("receipt on another's conversation: %v", rf)
		}
	})
	t.Run("wrong origin", func(t *testing.T) {
		defer guard(t)
		evil := &webtest.Client{Base: h.base, Origin: "https://evil.example.com"}
		_, err := evil.DialVisitor(ctx, s.Token, webtest.Cursor{}, webtest.DialOptions{})
		var de *webtest.DialError
		if !asDialError(err, &de) || de.Status != http.StatusForbidden {
			t.Errorf("WebSocket: %v, want 403", err)
		}
		if _, err := evil.StartSession(ctx, webtest.SessionRequest{}); webtest.StatusOf(err) != http.StatusForbidden {
			t.Errorf("session: %v, want 403", err)
		}
		req, _ := http.NewRequest(http.MethodOptions, h.base+"/api/v1/visitor/session", nil)
		req.Header.Set("Origin", "https://evil.example.com")
		resp := must(http.DefaultClient.Do(req))
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("preflight: HTTP %d, want 403", resp.StatusCode)
		}
	})
	t.Run("forged or stale identity", func(t *testing.T) {
		defer guard(t)
		forged := webtest.Sign("not-the-secret", "user-1", time.Now())
		stale := webtest.Sign(rtIdSecret, "user-1", time.Now().Add(-48*time.Hour))
		tampered := webtest.Sign(rtIdSecret, "user-1", time.Now())
		tampered.UserID = "user-2"
		for name, id := range map[string]*webtest.Identity{"forged": forged, "stale": stale, "tampered": tampered} {
			if _, err := h.cl.StartSession(ctx, webtest.SessionRequest{Identity: id}); webtest.StatusOf(err) != http.StatusUnauthorized {
				t.Errorf("%s: %v, want 401", name, err)
			}
		}
		if _, err := h.cl.StartSession(ctx, webtest.SessionRequest{Token: s.Token[:len(s.Token)-2] + "xx"}); webtest.StatusOf(err) != http.StatusUnauthorized {
			t.Errorf("forged visitor token: %v, want 401", err)
		}
	})
	t.Run("hello required", func(t *testing.T) {
		defer guard(t)
		// Any well-formed first frame but hello: one the server knows, one
		// it takes without decoding once hello is done, one it does not know.
		for _, first := range []map[string]any{{"type": "send", "id": "x", "text": "hi"}, {"type": "pong"}, {"type": "typo"}} {
			c, err := h.cl.DialVisitor(ctx, "", webtest.Cursor{}, webtest.DialOptions{Hello: first})
			if err != nil {
				t.Fatal(err)
			}
			f := must(c.Expect("error", rtWait))
			if f.Error.Code != "hello_required" {
				t.Errorf("first frame %v: %s", first, f.Raw)
			}
			if code := must(c.Closed(rtWait)); code != 4000 {
				t.Errorf("first frame %v: closed with %d, want 4000", first, code)
			}
		}
	})
	if convs, msgs := h.counts(); convs != convs0 || msgs != msgs0 {
		t.Fatalf("bad input stored something: %d→%d conversations, %d→%d messages", convs0, convs, msgs0, msgs)
	}
}

func asDialError(err error, de **webtest.DialError) bool {
	e, ok := err.(*webtest.DialError)
	if ok {
		*de = e
	}
	return ok
}

func TestRateLimits(t *testing.T) {
	defer guard(t)
	h := startRT(t, "    limits: {requests_per_minute: 6, messages_per_minute: 2, conversations_per_hour: 3}\n")
	ctx := context.Background()
	s := h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	for i := range 2 {
		check(vc.SendText(fmt.Sprint("m", i), 0, "hi", false))
		must(vc.Ack(fmt.Sprint("m", i), rtWait))
	}
	check(vc.SendText("m2", 0, "too many", false))
	f := must(vc.WaitFor(rtWait, func(f webtest.Frame) bool { return f.ID == "m2" }))
	if f.Type != "error" || f.Error.Code != "rate_limited" || f.Error.RetryAfterMS <= 0 {
		t.Fatalf("third message: %s", f.Raw)
	}
	// New sessions per address: 3 an hour (one used above).
	h.session("")
	h.session("")
	_, err := h.cl.StartSession(ctx, webtest.SessionRequest{})
	var he *webtest.HTTPError
	if e, ok := err.(*webtest.HTTPError); ok {
		he = e
	}
	if he == nil || he.Status != http.StatusTooManyRequests || he.RetryAfter == "" || he.Err.Code != "rate_limited" {
		t.Fatalf("fourth session: %v", err)
	}
	// Requests per address: 6 a minute; 5 used (4 sessions and a WebSocket).
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	_, err = p.Post(ctx, map[string]string{"type": "ping"})
	if err != nil {
		t.Fatalf("sixth request: %v", err)
	}
	_, err = p.Post(ctx, map[string]string{"type": "ping"})
	he = nil
	if e, ok := err.(*webtest.HTTPError); ok {
		he = e
	}
	if he == nil || he.Status != http.StatusTooManyRequests || he.RetryAfter == "" {
		t.Fatalf("seventh request: %v, want 429 with Retry-After", err)
	}
}

// TestLongestTokenWorksEverywhere: the longest user id and name, in the
// characters JSON escapes most, make a token every transport takes.
func TestLongestTokenWorksEverywhere(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	id := strings.Repeat("<", 256)
	s := must(h.cl.StartSession(ctx, webtest.SessionRequest{Identity: webtest.Sign(rtIdSecret, id, time.Now()),
		Name: strings.Repeat("&", 100)}))
	if s.Visitor.ID != "u:"+id {
		t.Fatalf("visitor = %+v", s.Visitor)
	}
	h.visitorConn(s.Token, webtest.Cursor{}) // fails the test unless synced
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	must(p.SendText(ctx, "x", 0, "hello", false))
	if again := must(h.cl.StartSession(ctx, webtest.SessionRequest{Token: s.Token})); again.Visitor.ID != s.Visitor.ID {
		t.Fatalf("renewed session = %+v", again.Visitor)
	}
}

func TestVerifiedIdentityKeepsHistoryAcrossDevices(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	laptop := must(h.cl.StartSession(ctx, webtest.SessionRequest{Identity: webtest.Sign(rtIdSecret, "user-42", time.Now()), Name: "Zhang San"}))
	if laptop.Visitor.ID != "u:user-42" || !laptop.Visitor.Verified {
		t.Fatalf("visitor = %+v", laptop.Visitor)
	}
	p := &webtest.Poller{Client: h.cl, Token: laptop.Token}
	for i := range 3 {
		must(p.SendText(ctx, fmt.Sprint("l", i), 0, fmt.Sprint("from the laptop ", i), false))
	}
	phone := must(h.cl.StartSession(ctx, webtest.SessionRequest{Identity: webtest.Sign(rtIdSecret, "user-42", time.Now())}))
	if phone.Visitor.ID != laptop.Visitor.ID || phone.Conversation == nil || phone.LastSeq != 3 {
		t.Fatalf("phone session = %+v", phone)
	}
	page := must(h.cl.History(ctx, phone.Token, 0, 0, 2))
	if len(page.Messages) != 2 || !page.HasMore || page.Messages[1].Text != "from the laptop 2" {
		t.Fatalf("history page = %+v", page)
	}
	older := must(h.cl.History(ctx, phone.Token, page.Conversation.ID, page.Messages[0].Seq, 2))
	if len(older.Messages) != 1 || older.HasMore || older.Messages[0].Text != "from the laptop 0" {
		t.Fatalf("older page = %+v", older)
	}
	// An anonymous visitor's token resumes the same identity.
	anon := h.session("")
	again := must(h.cl.StartSession(ctx, webtest.SessionRequest{Token: anon.Token}))
	if again.Visitor.ID != anon.Visitor.ID || !strings.HasPrefix(anon.Visitor.ID, "a:") {
		t.Fatalf("resumed %q, want %q", again.Visitor.ID, anon.Visitor.ID)
	}
	// CORS preflight from the allowed origin.
	req, _ := http.NewRequest(http.MethodOptions, h.base+"/lp/visitor", nil)
	req.Header.Set("Origin", rtOrigin)
	resp := must(http.DefaultClient.Do(req))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != rtOrigin ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: HTTP %d %v", resp.StatusCode, resp.Header)
	}
}

func TestSlowConsumerIsDroppedAndOthersKeepUp(t *testing.T) {
	defer guard(t)
	// A long ping interval: the paused reader must overflow, not time out.
	h := startRT(t, "    ping_interval: 1m\n")
	ctx := context.Background()
	tok := h.token(h.alice)
	slow, err := h.cl.DialAgent(ctx, tok, nil, false, webtest.DialOptions{Paused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, _, _ := h.agentConn(h.token(h.bob), nil)
	waitUntil(t, "both agents registered", func() bool { return h.ch.Stats().Agents == 2 })

	// Frames of ~32 KiB each, in bursts the fast reader keeps up with,
	// until the slow reader's socket buffers and then its queue (64 frames)
	// overflow.
	big := strings.Repeat("x", 32<<10)
	for i := 0; h.ch.Stats().SlowConsumers == 0; {
		if i >= 4000 {
			t.Fatal("the slow consumer was never dropped")
		}
		first := i
		for range 16 {
			err := h.ch.PublishUpdates(core.Update{Type: core.UpdateStatus, Message: &core.Message{
				ID: 0, ConversationID: 1, Status: core.MsgFailed, FailReason: fmt.Sprint(i, " ", big),
			}})
			if err != nil {
				t.Fatal(err)
			}
			i++
		}
		for j := first; j < i; j++ {
			f := must(fast.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "status" }))
			if !strings.HasPrefix(f.FailReason, fmt.Sprint(j, " ")) {
				t.Fatalf("fast agent's frame %d: %.40s", j, f.FailReason)
			}
		}
	}
	waitUntil(t, "slow consumer dropped", func() bool { return h.ch.Stats().SlowConsumers == 1 })
	slow.Resume()
	if code := must(slow.Closed(rtWait)); code != 4008 {
		t.Fatalf("slow consumer closed with %d, want 4008", code)
	}
}

func TestSilentClientIsDropped(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	s := h.session("")
	c, err := h.cl.DialVisitor(context.Background(), s.Token, webtest.Cursor{}, webtest.DialOptions{Silent: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// ping_interval is 200ms: silent for two intervals, the client is closed.
	if code := must(c.Closed(rtWait)); code != 4002 {
		t.Fatalf("closed with %d, want 4002", code)
	}
	if c.Pings() == 0 {
		t.Fatal("the server never pinged")
	}
	// A client that answers pings stays.
	live, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	waitUntil(t, "a few pings", func() bool { return live.Pings() >= 4 })
	check(live.Send(map[string]string{"type": "ping"}))
	must(live.Expect("pong", rtWait))
}

func TestMalformedEnvelopeIsDropped(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	alice, _, _ := h.agentConn(h.token(h.alice), nil)
	if err := h.ch.PublishRaw([]byte(`{"v":1,"kind":"updates","updates":[{"type":"bogus"}]}`)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "envelope dropped", func() bool { return h.ch.Stats().BadEnvelopes == 1 })
	// The feed goes on.
	s := h.session("")
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	must(p.SendText(context.Background(), "after", 0, "after the bad envelope", false))
	must(alice.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "after the bad envelope" }))
}

func TestShutdownEndsSocketsAndPolls(t *testing.T) {
	defer guard(t)
	h := startRT(t, "    long_poll_timeout: 1m\n")
	s := h.session("")
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	polled := make(chan error, 1)
	go func() {
		_, err := p.Poll(context.Background())
		polled <- err
	}()
	waitUntil(t, "the poll waiting", func() bool { return h.ch.Stats().Visitors == 2 })
	// The server waits for requests in flight: the minute-long poll must
	// be answered at once, and the socket closed with 1001.
	h.stop()
	if err := <-polled; err != nil {
		t.Fatalf("waiting poll: %v", err)
	}
	if code := must(vc.Closed(rtWait)); code != 1001 {
		t.Fatalf("closed with %d, want 1001", code)
	}
}

func TestResumeIncludesTheIdentitysNewerConversation(t *testing.T) {
	defer guard(t)
	h := startRTRouting(t, "", `strategy: least_busy, offline_reply: "", reopen_within: 1ms`)
	ctx := context.Background()
	s := h.session("")
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	first := must(p.SendText(ctx, "1", 0, "first conversation", false)).Message
	cur := webtest.Cursor{ConversationID: first.ConversationID, LastSeq: first.Seq}
	// The agent closes it; the visitor writes again later: a new conversation.
	must(h.svc.Close(ctx, h.alice.ID, first.ConversationID))
	time.Sleep(5 * time.Millisecond)
	second := must(p.SendText(ctx, "2", 0, "second conversation", false)).Message
	if second.ConversationID == first.ConversationID {
		t.Fatal("no new conversation")
	}
	_, replay, synced := h.visitorConn(s.Token, cur)
	var got []string
	for _, f := range replay {
		got = append(got, fmt.Sprintf("#%d/%d", f.Message.ConversationID, f.Message.Seq))
	}
	// The resolved event of the first, then the second from its start.
	want := []string{fmt.Sprintf("#%d/2", first.ConversationID), fmt.Sprintf("#%d/1", second.ConversationID)}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("replay %v, want %v", got, want)
	}
	if replay[0].Message.Event == nil || replay[0].Message.Event.Type != "resolved" {
		t.Fatalf("first replayed frame: %s", replay[0].Raw)
	}
	if synced.ConversationID != second.ConversationID || *synced.LastSeq != 1 {
		t.Fatalf("synced = %s", synced.Raw)
	}
	// Long polling resumes the same way.
	lp := &webtest.Poller{Client: h.cl, Token: s.Token, Cursor: cur}
	if fs := must(lp.Poll(ctx)); len(fs) != 2 || lp.Cursor.ConversationID != second.ConversationID || lp.Cursor.LastSeq != 1 {
		t.Fatalf("long poll: %d frames, cursor %+v", len(fs), lp.Cursor)
	}
}

// A cursor ahead of the conversation (a restored database, a client's bug)
// is taken as the conversation's end: synced says where it really is, and
// the next messages arrive, over a WebSocket and over long polling.
func TestResumeFromACursorAheadOfTheConversation(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	alice, s, conv, cur := h.answeredVisitor()
	vc, replay, synced := h.visitorConn(s.Token, webtest.Cursor{ConversationID: conv, LastSeq: cur.LastSeq + 3})
	if len(replay) != 0 || synced.LastSeq == nil || *synced.LastSeq != cur.LastSeq {
		t.Errorf("resume from %d past the end: replay %v, synced %s; want nothing replayed and last_seq %d", 3, texts(replay), synced.Raw, cur.LastSeq)
	}
	check(alice.SendText("a-2", conv, "after the ahead cursor", false))
	must(alice.Ack("a-2", rtWait))
	if _, err := vc.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "after the ahead cursor" }); err != nil {
		t.Errorf("websocket: the next reply did not arrive: %v", err)
	}
	vc.Close()
	// Long polling: the answer's cursor is the conversation's end, and a
	// reply while it waits arrives.
	p := &webtest.Poller{Client: h.cl, Token: s.Token, Cursor: webtest.Cursor{ConversationID: conv, LastSeq: cur.LastSeq + 10}}
	done := make(chan []webtest.Frame, 1)
	go func() { fs, _ := p.Poll(context.Background()); done <- fs }()
	waitUntil(t, "the poll waiting", func() bool {
		return h.svc.Presence().ContactConnected(must(h.store.Conversation(context.Background(), conv)).ContactID)
	})
	check(alice.SendText("a-3", conv, "while the poll waits", false))
	must(alice.Ack("a-3", rtWait))
	if got := texts(<-done); !slices.Contains(got, "while the poll waits") {
		t.Errorf("long poll from past the end: got %q, want the reply", got)
	}
}

// Two devices of one signed-in visitor: A connects before the identity has
// a conversation, B writes first. A's socket receives the conversation and
// counts for its contact (push fallback asks whether the contact has a
// live socket), until it closes.
func TestSecondDeviceCountsForItsContact(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	a := must(h.cl.StartSession(ctx, webtest.SessionRequest{Identity: webtest.Sign(rtIdSecret, "42", time.Now())}))
	b := must(h.cl.StartSession(ctx, webtest.SessionRequest{Identity: webtest.Sign(rtIdSecret, "42", time.Now())}))
	va, _, _ := h.visitorConn(a.Token, webtest.Cursor{})
	pb := &webtest.Poller{Client: h.cl, Token: b.Token}
	m := must(pb.SendText(ctx, "b-1", 0, "from the phone", false)).Message
	must(va.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.ID == m.ID }))
	contact := must(h.store.Conversation(ctx, m.ConversationID)).ContactID
	if !h.svc.Presence().ContactConnected(contact) {
		t.Error("device A's socket receives the conversation, but its contact has no live socket")
	}
	va.Close()
	waitUntil(t, "A's socket no longer counted", func() bool { return !h.svc.Presence().ContactConnected(contact) })
}

// One address holds at most 64 agent sockets that have not said hello (the
// visitor endpoints have their rate limit; an agent socket is
// authenticated only by its hello): the next is refused with 429 until one
// of them authenticates or goes.
func TestUnauthenticatedAgentSocketsPerAddress(t *testing.T) {
	defer guard(t)
	h := startRT(t, "    ping_interval: 30s\n") // no hello within 10 s closes a socket: not during the test
	url := "ws" + strings.TrimPrefix(h.base, "http") + "/ws/agent"
	hdr := http.Header{"Origin": {rtOrigin}}
	dial := func() (*websocket.Conn, int) {
		ws, res, err := websocket.DefaultDialer.Dial(url, hdr)
		if err != nil {
			if res == nil {
				t.Fatal(err)
			}
			return nil, res.StatusCode
		}
		return ws, http.StatusSwitchingProtocols
	}
	var open []*websocket.Conn
	defer func() {
		for _, ws := range open {
			ws.Close()
		}
	}()
	for i := range 64 {
		ws, code := dial()
		if ws == nil {
			t.Fatalf("socket %d: HTTP %d", i+1, code)
		}
		open = append(open, ws)
	}
	if ws, code := dial(); ws != nil || code != http.StatusTooManyRequests {
		t.Fatalf("a 65th socket without hello: HTTP %d, want 429", code)
	}
	// One authenticates: it no longer counts.
	check(open[0].WriteJSON(map[string]any{"type": "hello", "token": h.token(h.alice)}))
	var welcome struct{ Type string }
	check(open[0].ReadJSON(&welcome))
	if welcome.Type != "welcome" {
		t.Fatalf("hello answered %q", welcome.Type)
	}
	// (before the welcome is written)
	ws, code := dial()
	if ws == nil {
		t.Fatalf("after a hello: HTTP %d, want a socket", code)
	}
	open = append(open, ws)
	// One goes: its place is free again.
	open[1].Close()
	waitUntil(t, "a socket admitted after one closed", func() bool {
		ws, _ := dial()
		if ws != nil {
			open = append(open, ws)
		}
		return ws != nil
	})
}
