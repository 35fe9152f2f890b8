package core_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

func TestSendTemplate(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: 240 * time.Hour}, 1, 24*time.Hour)
	a := f.agents[0]
	c := f.say("gil", "1", "hi").Conversation
	f.clock.Advance(25 * time.Hour)

	// Outside the window a plain reply is refused, a template goes out.
	if _, err := f.svc.Reply(ctx, a.ID, c.ID, core.Message{Kind: core.KindText, Text: "too late"}); !errors.Is(err, core.ErrWindowClosed) {
		t.Fatalf("reply outside the window: %v, want ErrWindowClosed", err)
	}
	m, err := f.svc.SendTemplate(ctx, a.ID, c.ID, " reopen ")
	if err != nil {
		t.Fatalf("SendTemplate outside the window: %v", err)
	}
	if m.Kind != core.KindTemplate || m.Text != "reopen" || m.Status != core.MsgPending || m.SenderID != a.ID || !m.Outgoing() {
		t.Fatalf("template message = %+v", m)
	}
	f.notes.mu.Lock()
	n := len(f.notes.outbox)
	f.notes.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d outbox kicks, want 1", n)
	}
	// Sending it took the waiting conversation for the agent.
	if got := f.conv(c.ID); got.AssigneeID != a.ID || got.Status != core.StatusOpen {
		t.Fatalf("conversation after the template: %+v", got)
	}
	// The window is still closed: the customer has not answered.
	if _, err := f.svc.Reply(ctx, a.ID, c.ID, core.Message{Kind: core.KindText, Text: "still too late"}); !errors.Is(err, core.ErrWindowClosed) {
		t.Fatalf("reply after the template: %v, want ErrWindowClosed", err)
	}

	// A failed template can be resent, window or not.
	if _, _, err := f.store.UpdateStatus(ctx, core.StatusUpdate{MessageID: m.ID, Status: core.MsgFailed, Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	re, err := f.svc.Resend(ctx, a.ID, m.ID)
	if err != nil || re.Kind != core.KindTemplate || re.Text != "reopen" || re.ResendOf != m.ID {
		t.Fatalf("resend of a template: %+v %v", re, err)
	}

	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"empty name", func() error { _, err := f.svc.SendTemplate(ctx, a.ID, c.ID, "  "); return err }},
		{"as a note", func() error {
			_, err := f.svc.Note(ctx, a.ID, c.ID, core.Message{Kind: core.KindTemplate, Text: "reopen"})
			return err
		}},
		{"from a customer", func() error {
			_, err := f.svc.Ingest(ctx, core.Inbound{Channel: "ext", ExternalID: "gil",
				Message: core.Message{Kind: core.KindTemplate, Text: "reopen", DedupKey: core.ProviderKey("ext", "2")}})
			return err
		}},
	} {
		if err := tc.do(); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestSendTemplateNeedsAWindowedChannel(t *testing.T) {
	ctx := context.Background()
	// No window: templates mean nothing on this channel.
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 0)
	c := f.say("hal", "1", "hi").Conversation
	if _, err := f.svc.SendTemplate(ctx, f.agents[0].ID, c.ID, "reopen"); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("SendTemplate without a window: %v, want ErrInvalid", err)
	}
}
