package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// TestDeliverWithSQLite runs the outbox end to end on the real store:
// replies committed while no Deliverer runs (a crash) are swept at start,
// later ones are kicked over the bus, a transient failure is retried and a
// permanent one marks the message failed.
func TestDeliverWithSQLite(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	store, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"),
		Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	in, err := store.Ingest(ctx, core.Inbound{Channel: channel, ExternalID: "8613800000000", Name: "张三",
		Message: core.Message{Kind: core.KindText, Text: "在吗", DedupKey: core.ProviderKey(channel, "wamid.1"),
			CreatedAt: clock.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	reply := func(text string) core.Appended {
		t.Helper()
		res, err := store.Append(ctx, core.Append{ConversationID: in.Conversation.ID, Deliver: true,
			Message: core.Message{SenderKind: core.SenderAgent, SenderID: 1, Visibility: core.Public,
				Kind: core.KindText, Text: text, Status: core.MsgPending, CreatedAt: clock.Now()}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outbox == nil {
			t.Fatal("Append with Deliver returned no outbox entry")
		}
		return res
	}
	before := []core.Appended{reply("one"), reply("two")} // committed before the "crash"

	bus := memory.New(quietLogger())
	defer bus.Close()
	sender := newFakeSender(clock)
	notify := &recordingNotifier{}
	d, err := bridge.NewDeliverer(bridge.DelivererConfig{Channel: channel, Sender: sender, Store: store,
		Notify: notify, Bus: bus, Clock: clock, Logger: quietLogger(), SweepInterval: time.Minute,
		Backoff: func(int) time.Duration { return time.Second }})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	depth := func() int {
		n, _, err := store.OutboxStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, "the entries present at start to be delivered", func() bool { return depth() == 0 })

	kicker := bridge.NewNotifier(bridge.NotifierConfig{Publisher: bus.Publisher(), Logger: quietLogger()})
	// The failures are set up by text before the entries exist: the lane
	// that sent "two" may still be looking for its key's next entry and
	// find "three" before any kick.
	sender.failText("three", errors.New("503"))
	sender.failText("four", bridge.Permanent("user blocked the bot", nil))
	flaky, blocked := reply("three"), reply("four")
	kicker.Deliver(ctx, *flaky.Outbox)
	kicker.Deliver(ctx, *blocked.Outbox)
	eventually(t, "the failed attempt to be recorded", func() bool {
		e, err := store.OutboxEntry(ctx, flaky.Outbox.ID)
		return err == nil && e.Attempts == 1
	})
	// "four" waits behind "three": same conversation, same key.
	if n := len(sender.attemptsOf(blocked.Outbox.ID)); n != 0 {
		t.Fatalf("entry behind a backing-off head tried %d times", n)
	}
	clock.Advance(time.Second)
	eventually(t, "the outbox to drain", func() bool { return depth() == 0 })

	for _, a := range append(before, flaky) {
		m, err := store.Message(ctx, a.Message.ID)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != core.MsgSent || m.ExternalID != fmt.Sprintf("ext-%d", a.Outbox.ID) {
			t.Errorf("%q: status %q external id %q", m.Text, m.Status, m.ExternalID)
		}
		if got, err := store.MessageByExternalID(ctx, channel, m.ExternalID); err != nil || got.ID != m.ID {
			t.Errorf("MessageByExternalID(%q) = %d, %v", m.ExternalID, got.ID, err)
		}
	}
	m, err := store.Message(ctx, blocked.Message.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != core.MsgFailed || m.FailReason != "user blocked the bot" {
		t.Errorf("blocked: status %q reason %q", m.Status, m.FailReason)
	}
	want := []string{"one", "two", "three", "three", "four"}
	var got []string
	sender.mu.Lock()
	for _, a := range sender.attempts {
		got = append(got, a.out.Message.Text)
	}
	sender.mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("attempts in order %v, want %v", got, want)
	}
	eventually(t, "status updates", func() bool { return len(notify.statuses()) == 4 })
}
