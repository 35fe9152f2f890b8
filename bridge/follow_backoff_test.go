package bridge_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// failingFollow is a handler whose provider is down.
type failingFollow struct{ calls atomic.Int64 }

func (f *failingFollow) Follow(context.Context, core.Message, core.Conversation) error {
	f.calls.Add(1)
	return errors.New("slack is down")
}

// TestFollowerBackoffHoldsUnderTraffic: while the handler fails, the
// updates published on the bus (typing indicators, receipts, any node's
// messages), each of which wakes the follower, do not make it retry before
// its backoff (1 s, then 2 s, …) is over.
func TestFollowerBackoffHoldsUnderTraffic(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bus := memory.New(quietLogger())
	defer bus.Close()
	h := &failingFollow{}
	f, err := bridge.NewFollower(bridge.FollowerConfig{Name: "slack", Handler: h, Store: store, Bus: bus, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()
	waitFor(t, "first start", func() bool { _, err := store.Setting(ctx, "follow.slack"); return err == nil })
	if _, err := store.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "42",
		Message: core.Message{Kind: core.KindText, Text: "hi", CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	n := bridge.NewNotifier(bridge.NotifierConfig{Node: "n1", Publisher: bus.Publisher()})
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		n.Publish(ctx, core.Update{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 1, On: true}})
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	<-done
	if h.calls.Load() > 3 {
		t.Errorf("handler retried %d times in 1 s; the backoff (1 s, 2 s, …) allows 2", h.calls.Load())
	}
}
