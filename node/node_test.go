package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/channels/webhook"
	"github.com/kefuhq/kefu/channels/webhook/webhooktest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/testenv"
	"github.com/kefuhq/kefu/node/nodetest"
)

const secret = "s3cret-for-tests"

// harness is one in-process node with a webhook channel named "crm" whose
// replies go to a fake receiver.
type harness struct {
	t    *testing.T
	node *nodetest.Node
	rcv  *webhooktest.Receiver
	base string
}

func start(t *testing.T, routing string) *harness {
	t.Helper()
	rcv := webhooktest.NewReceiver(secret)
	t.Cleanup(rcv.Close)
	n := nodetest.Start(t, fmt.Sprintf(`
routing: {%s}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
  - {email: bob@example.com, name: Bob, password: bob-password}
channels:
  crm: {type: webhook, enabled: true, secret: %q, deliver_url: %q}
`, routing, secret, rcv.URL))
	return &harness{t: t, node: n, rcv: rcv, base: n.URL}
}

func (h *harness) agent(email string) core.Agent { return h.node.Agent(h.t, email) }

// post sends a customer message and decodes kefu's reply.
func (h *harness) post(in webhook.Inbound) (int, webhook.Reply) {
	h.t.Helper()
	resp, err := webhooktest.Post(http.DefaultClient, h.base+"/webhooks/crm", secret, in)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r webhook.Reply
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			h.t.Fatal(err)
		}
	}
	return resp.StatusCode, r
}

func (h *harness) messages(convID int64) []core.Message { return h.node.Messages(h.t, convID) }

var waitFor = nodetest.WaitFor

func TestMessagePathEndToEnd(t *testing.T) {
	h := start(t, "strategy: least_busy")
	ctx := context.Background()
	svc := h.node.Service()
	alice := h.agent("alice@example.com")
	release := svc.Presence().Connect(alice.ID) // Alice opens the console
	defer release()

	code, r := h.post(webhook.Inbound{ID: "m1", From: "cust-1", Name: "Zhang San", Text: "Hello, my order is late"})
	if code != http.StatusOK || r.Seq != 1 || r.Duplicate {
		t.Fatalf("first message: HTTP %d %+v", code, r)
	}
	conv, err := svc.Store().Conversation(ctx, r.ConversationID)
	if err != nil {
		t.Fatal(err)
	}
	if conv.AssigneeID != alice.ID || conv.Status != core.StatusOpen {
		t.Fatalf("conversation not routed to the online agent: %+v", conv)
	}

	// The provider retries: stored once, acknowledged again.
	code, r2 := h.post(webhook.Inbound{ID: "m1", From: "cust-1", Name: "Zhang San", Text: "Hello, my order is late"})
	if code != http.StatusOK || !r2.Duplicate || r2.MessageID != r.MessageID {
		t.Fatalf("retry: HTTP %d %+v, want duplicate of %d", code, r2, r.MessageID)
	}

	reply, err := svc.Reply(ctx, alice.ID, conv.ID, core.Message{Kind: core.KindText, Text: "Sorry! Checking now."})
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status != core.MsgPending {
		t.Fatalf("reply status %s before delivery, want pending", reply.Status)
	}
	got := h.rcv.WaitDelivered(1, 10*time.Second)
	if len(got) != 1 || got[0].Text != "Sorry! Checking now." || got[0].To != "cust-1" || got[0].MessageID != reply.ID {
		t.Fatalf("deliveries = %+v", got)
	}
	waitFor(t, "reply marked sent", func() bool {
		m, err := svc.Store().Message(ctx, reply.ID)
		return err == nil && m.Status == core.MsgSent && m.ExternalID == fmt.Sprintf("ext-%d", reply.ID)
	})

	// The receiver reports the customer read it.
	resp, err := webhooktest.Post(http.DefaultClient, h.base+"/webhooks/crm", secret,
		webhook.Inbound{Type: "status", MessageID: reply.ID, Status: "read"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status webhook: HTTP %d", resp.StatusCode)
	}
	if m, _ := svc.Store().Message(ctx, reply.ID); m.Status != core.MsgRead {
		t.Fatalf("status = %s, want read", m.Status)
	}

	// A note is never delivered to the customer.
	if _, err := svc.Note(ctx, alice.ID, conv.ID, core.Message{Kind: core.KindText, Text: "VIP customer"}); err != nil {
		t.Fatal(err)
	}
	code, _ = h.post(webhook.Inbound{ID: "m2", From: "cust-1", Text: "Thanks"})
	if code != http.StatusOK {
		t.Fatalf("second message: HTTP %d", code)
	}
	var seqs []int64
	for _, m := range h.messages(conv.ID) {
		seqs = append(seqs, m.Seq)
	}
	// 1 customer, 2 assigned event, 3 reply, 4 note, 5 customer.
	if want := []int64{1, 2, 3, 4, 5}; fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Fatalf("seqs = %v, want %v", seqs, want)
	}
	if n := len(h.rcv.Deliveries()); n != 1 {
		t.Fatalf("%d deliveries, want 1 (the note must not go out)", n)
	}
}

func TestOfflineReplyAndQueueDrain(t *testing.T) {
	h := start(t, "strategy: round_robin, max_open_per_agent: 1, offline_reply: \"We are away.\"")
	ctx := context.Background()
	svc := h.node.Service()

	// Nobody is online: both conversations wait, each customer gets the offline reply once.
	_, r1 := h.post(webhook.Inbound{ID: "a1", From: "cust-a", Text: "first"})
	_, r2 := h.post(webhook.Inbound{ID: "b1", From: "cust-b", Text: "second"})
	h.post(webhook.Inbound{ID: "a2", From: "cust-a", Text: "anyone?"})
	got := h.rcv.WaitDelivered(2, 10*time.Second)
	if len(got) != 2 {
		t.Fatalf("offline replies delivered: %+v", got)
	}
	to := map[string]int{}
	for _, d := range got {
		if d.Text != "We are away." || d.SenderKind != "bot" {
			t.Fatalf("unexpected delivery %+v", d)
		}
		to[d.To]++
	}
	if to["cust-a"] != 1 || to["cust-b"] != 1 {
		t.Fatalf("offline replies per customer = %v, want one each", to)
	}

	// Alice comes online with room for one: she gets the oldest waiting conversation.
	alice := h.agent("alice@example.com")
	release := svc.Presence().Connect(alice.ID)
	defer release()
	waitFor(t, "queue drained to alice", func() bool {
		c, _ := svc.Store().Conversation(ctx, r1.ConversationID)
		return c.AssigneeID == alice.ID
	})
	if c, _ := svc.Store().Conversation(ctx, r2.ConversationID); c.Status != core.StatusPending {
		t.Fatalf("second conversation should still wait (alice is full): %+v", c)
	}
	// She closes it: her capacity frees, the next one comes to her.
	if _, err := svc.Close(ctx, alice.ID, r1.ConversationID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second conversation routed", func() bool {
		c, _ := svc.Store().Conversation(ctx, r2.ConversationID)
		return c.AssigneeID == alice.ID && c.Status == core.StatusOpen
	})
	// The first customer writes again within reopen_within: the same conversation reopens.
	_, r3 := h.post(webhook.Inbound{ID: "a3", From: "cust-a", Text: "one more thing"})
	if r3.ConversationID != r1.ConversationID {
		t.Fatalf("message after close went to #%d, want reopened #%d", r3.ConversationID, r1.ConversationID)
	}
}

func TestDeliveryFailures(t *testing.T) {
	h := start(t, "strategy: least_busy")
	ctx := context.Background()
	svc := h.node.Service()
	alice := h.agent("alice@example.com")
	defer svc.Presence().Connect(alice.ID)()
	_, r := h.post(webhook.Inbound{ID: "x1", From: "cust-x", Text: "hi"})

	// 500 then success: retried, delivered once.
	h.rcv.FailNext(0, http.StatusInternalServerError)
	m1, err := svc.Reply(ctx, alice.ID, r.ConversationID, core.Message{Kind: core.KindText, Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	h.rcv.WaitDelivered(1, 15*time.Second)
	// 400: permanent, the message fails with the receiver's reason, and
	// the conversation's next reply still goes out.
	h.rcv.FailNext(0, http.StatusBadRequest)
	m2, _ := svc.Reply(ctx, alice.ID, r.ConversationID, core.Message{Kind: core.KindText, Text: "two"})
	m3, _ := svc.Reply(ctx, alice.ID, r.ConversationID, core.Message{Kind: core.KindText, Text: "three"})
	got := h.rcv.WaitDelivered(2, 15*time.Second)
	var texts []string
	for _, d := range got {
		texts = append(texts, d.Text)
	}
	if strings.Join(texts, ",") != "one,three" {
		t.Fatalf("delivered %v, want [one three]", texts)
	}
	waitFor(t, "two marked failed", func() bool {
		m, _ := svc.Store().Message(ctx, m2.ID)
		return m.Status == core.MsgFailed && strings.Contains(m.FailReason, "HTTP 400")
	})
	for _, id := range []int64{m1.ID, m3.ID} {
		waitFor(t, fmt.Sprintf("message %d marked sent", id), func() bool {
			m, _ := svc.Store().Message(ctx, id)
			return m.Status == core.MsgSent
		})
	}
	// Resend the failed one: a new message linked to it goes out.
	re, err := svc.Resend(ctx, alice.ID, m2.ID)
	if err != nil || re.ResendOf != m2.ID {
		t.Fatalf("resend: %+v %v", re, err)
	}
	// A double click resends once.
	if again, err := svc.Resend(ctx, alice.ID, m2.ID); err != nil || again.ID != re.ID {
		t.Fatalf("second resend: %+v %v, want the same message %d", again, err, re.ID)
	}
	got = h.rcv.WaitDelivered(3, 15*time.Second)
	if len(got) != 3 || got[2].Text != "two" {
		t.Fatalf("resent delivery missing: %+v", got)
	}
}

func TestWebhookRejectsBadInput(t *testing.T) {
	h := start(t, "strategy: least_busy")
	url := h.base + "/webhooks/crm"
	do := func(name string, req *http.Request, want int) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: HTTP %d (%s), want %d", name, resp.StatusCode, body, want)
		}
		if want >= 400 && resp.StatusCode >= 400 && !bytes.Contains(body, []byte(`"code"`)) {
			t.Errorf("%s: error body without a code: %s", name, body)
		}
	}
	signed := func(body []byte, key string, at time.Time) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		webhook.Sign(key, req.Header, body, at)
		return req
	}
	good := []byte(`{"id":"z1","from":"c","text":"hi"}`)
	do("bad signature", signed(good, "wrong-secret", time.Now()), http.StatusUnauthorized)
	do("stale timestamp", signed(good, secret, time.Now().Add(-10*time.Minute)), http.StatusUnauthorized)
	unsigned, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(good))
	do("unsigned", unsigned, http.StatusUnauthorized)
	do("malformed JSON", signed([]byte(`{"id":`), secret, time.Now()), http.StatusBadRequest)
	do("unknown field", signed([]byte(`{"id":"z2","from":"c","text":"hi","admin":true}`), secret, time.Now()), http.StatusBadRequest)
	do("empty text", signed([]byte(`{"id":"z3","from":"c","text":"  "}`), secret, time.Now()), http.StatusBadRequest)
	// Nothing storable once NULs are taken out: refused for good, not "retry".
	do("text of NULs", signed([]byte(`{"id":"z5","from":"c","text":"\u0000"}`), secret, time.Now()), http.StatusBadRequest)
	do("NUL in from", signed([]byte(`{"id":"z6","from":"a\u0000b","text":"hi"}`), secret, time.Now()), http.StatusBadRequest)
	do("NUL in id", signed([]byte(`{"id":"\u0000","from":"c","text":"hi"}`), secret, time.Now()), http.StatusBadRequest)
	do("NUL in a status's reason", signed([]byte(`{"type":"status","message_id":1,"status":"failed","reason":"x\u0000"}`), secret, time.Now()), http.StatusBadRequest)
	big := []byte(`{"id":"z4","from":"c","text":"` + strings.Repeat("x", 70<<10) + `"}`)
	do("oversize", signed(big, secret, time.Now()), http.StatusRequestEntityTooLarge)
	get, _ := http.NewRequest(http.MethodGet, url, nil)
	do("GET", get, http.StatusMethodNotAllowed)
	do("status for unknown message", signed([]byte(`{"type":"status","message_id":999,"status":"read"}`), secret, time.Now()), http.StatusNotFound)
	typo, _ := http.NewRequest(http.MethodPost, h.base+"/webhooks/crn", bytes.NewReader(good))
	do("a name no channel has", typo, http.StatusNotFound) // in the JSON shape, with a code

	convs, err := h.node.Service().Store().Conversations(context.Background(), core.ConversationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 0 {
		t.Fatalf("bad input stored %d conversations", len(convs))
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	h := start(t, "strategy: least_busy")
	for _, c := range [][2]string{{"/healthz", "ok"}, {"/readyz", "ready"}, {"/metrics", "kefu_outbox_depth"}, {"/metrics", "kefu_store_commits_total"}} {
		path, want := c[0], c[1]
		resp, err := http.Get(h.base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: HTTP %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
}

// TestMetricsForAlerts: the gauges deploy/prometheus's alerts and the
// Grafana dashboard read. The web channel's connections, by audience, follow
// a visitor's WebSocket; the longest wait in the queue and the age of the
// oldest undelivered reply are 0 with none and grow while a customer waits
// and while a reply cannot be delivered.
func TestMetricsForAlerts(t *testing.T) {
	const origin = "https://shop.example.com"
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // nothing listens there: deliveries fail and are retried
	n := nodetest.Start(t, fmt.Sprintf(`
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:
  web: {enabled: true, allowed_origins: [%q]}
  crm: {type: webhook, enabled: true, secret: %q, deliver_url: %q}
`, origin, secret, deadURL))
	ctx := context.Background()
	visitors := func() string { return scrape(t, n.URL, `kefu_web_connections{audience="visitor",channel="web"}`) }
	age := func() float64 {
		v, err := strconv.ParseFloat(scrape(t, n.URL, "kefu_outbox_oldest_age_seconds"), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := visitors(); got != "0" {
		t.Fatalf("visitor connections before any: %q", got)
	}
	if got := age(); got != 0 {
		t.Fatalf("oldest undelivered reply with none: %v", got)
	}
	wait := func() float64 {
		v, err := strconv.ParseFloat(scrape(t, n.URL, "kefu_queue_oldest_wait_seconds"), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := wait(); got != 0 {
		t.Fatalf("longest wait in an empty queue: %v", got)
	}

	web := &webtest.Client{Base: n.URL, Origin: origin}
	vs, err := web.StartSession(ctx, webtest.SessionRequest{Name: "Pat"})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := web.DialVisitor(ctx, vs.Token, webtest.Cursor{}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := vc.Sync(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the visitor's connection counted", func() bool { return visitors() == "1" })
	vc.Close()
	waitFor(t, "the closed connection uncounted", func() bool { return visitors() == "0" })

	resp, err := webhooktest.Post(http.DefaultClient, n.URL+"/webhooks/crm", secret, webhook.Inbound{ID: "m1", From: "cust-1", Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	var r webhook.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Nobody is available: the customer waits in the queue, and the
	// offline reply to them cannot be delivered (nothing listens at
	// deliver_url).
	waitFor(t, "the customer's wait", func() bool { return wait() >= 1 })
	if got := scrape(t, n.URL, "kefu_queue_length"); got != "1" {
		t.Fatalf("queue length %q, want 1", got)
	}
	waitFor(t, "the undelivered reply's age", func() bool { return age() >= 1 })
}

func TestClusteredBusesFromConfig(t *testing.T) {
	for _, bus := range []struct{ driver, url string }{
		{"redis", testenv.Redis(t)},
		{"nats", testenv.NATS(t)},
	} {
		t.Run(bus.driver, func(t *testing.T) {
			ns := testenv.Name("nodetest")
			if bus.driver == "redis" {
				testenv.CleanRedis(t, bus.url, ns+":")
			} else {
				testenv.CleanNATSStream(t, bus.url, ns)
			}
			n := nodetest.Start(t, fmt.Sprintf("node_id: test-%s-%d\nbus: {driver: %s, url: %q, namespace: %s}\n", bus.driver, time.Now().UnixNano(), bus.driver, bus.url, ns))
			resp, err := http.Get(n.URL + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/readyz on the %s bus: HTTP %d", bus.driver, resp.StatusCode)
			}
		})
	}
}

// TestIdleKeepAliveClosed: an HTTP keep-alive connection that waits for its
// next request longer than the idle timeout is closed (each one holds an
// open file), and a WebSocket quieter than that is not: its pings decide.
func TestIdleKeepAliveClosed(t *testing.T) {
	const idle = time.Second // the least server.idle_timeout takes
	origin := "https://shop.example"
	n := nodetest.Start(t, fmt.Sprintf("server: {idle_timeout: %s}\nchannels:\n  web: {enabled: true, allowed_origins: [%q]}\n", idle, origin))

	cn, err := net.Dial("tcp", strings.TrimPrefix(n.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if _, err := io.WriteString(cn, "GET /healthz HTTP/1.1\r\nHost: kefu\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(cn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("GET /healthz: HTTP %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	_ = cn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %q, %v; want it closed by the server (EOF)", b, err)
	}

	ctx := context.Background()
	web := &webtest.Client{Base: n.URL, Origin: origin}
	vs, err := web.StartSession(ctx, webtest.SessionRequest{Name: "Pat"})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := web.DialVisitor(ctx, vs.Token, webtest.Cursor{}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	if _, _, err := vc.Sync(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * idle)
	if err := vc.SendText("i-1", 0, "still here", false); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Ack("i-1", 10*time.Second); err != nil {
		t.Fatalf("a WebSocket quiet for longer than the idle timeout: %v", err)
	}
}
