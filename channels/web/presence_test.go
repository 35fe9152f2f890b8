package web_test

import (
	"context"
	"testing"

	"github.com/kefuhq/kefu/channels/web/webtest"
)

// A visitor's realtime connections count for their contact in the presence
// (push fallback asks whether the customer has a live socket on any node):
// a WebSocket from when a conversation shows who the visitor is until it
// closes, a long poll while it waits and for a grace after.
func TestVisitorConnectionsCountForTheirContact(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	p := h.svc.Presence()
	s := h.session("Presence Visitor")

	// A new visitor is nobody yet; their first message makes the contact,
	// and the connection counts from then on.
	vc, _, _ := h.visitorConn(s.Token, webtest.Cursor{})
	check(vc.SendText("p-1", 0, "hello", false))
	conv := must(vc.Ack("p-1", rtWait)).Message.ConversationID
	c, err := h.store.Conversation(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	contact := c.ContactID
	waitUntil(t, "the contact connected after the first message", func() bool { return p.ContactConnected(contact) })
	check(vc.Close())
	waitUntil(t, "the contact gone after the socket closed", func() bool { return !p.ContactConnected(contact) })

	// Resuming a conversation, and reconnecting without one: counted from
	// hello on.
	for _, cur := range []webtest.Cursor{{ConversationID: conv, LastSeq: 1}, {}} {
		vc, _, _ = h.visitorConn(s.Token, cur)
		waitUntil(t, "the contact connected on resume", func() bool { return p.ContactConnected(contact) })
		check(vc.Close())
		waitUntil(t, "the contact gone again", func() bool { return !p.ContactConnected(contact) })
	}

	// A long poll: connected while it waits, and released after the grace.
	poller := &webtest.Poller{Client: h.cl, Token: s.Token, Cursor: webtest.Cursor{ConversationID: conv, LastSeq: 1}}
	done := make(chan error, 1)
	go func() { _, err := poller.Poll(ctx); done <- err }()
	waitUntil(t, "the polling contact connected", func() bool { return p.ContactConnected(contact) })
	check(<-done)
	waitUntil(t, "the polling contact released after the grace", func() bool { return !p.ContactConnected(contact) })
}
