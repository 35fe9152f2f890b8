package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/core"
)

// TestLostPublishReachesLiveSockets: a committed message whose publish on
// the bus was lost (a Redis or NATS hiccup), with nothing after it, still
// reaches a connected console: the node reads the store past what it has
// released.
func TestLostPublishReachesLiveSockets(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	alice, _, _ := h.agentConn(h.token(h.alice), nil)
	waitUntil(t, "alice available", func() bool { return h.svc.Presence().Connected(h.alice.ID) })
	const who = "a:0123456789abcdef0123456789abcdef"
	must(h.svc.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: who, Message: core.Message{Kind: core.KindText, Text: "first"}}))
	must(alice.WaitFor(rtWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "first" }))
	// Committed through the store alone: no update is published.
	must(h.store.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: who,
		Message: core.Message{Kind: core.KindText, Text: "its publish was lost", CreatedAt: time.Now()}}))
	if _, err := alice.WaitFor(rtWait, func(f webtest.Frame) bool {
		return f.Type == "message" && f.Message.Text == "its publish was lost"
	}); err != nil {
		t.Fatalf("the console never got the message: %v", err)
	}
}
