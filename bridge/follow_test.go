package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
)

// followRecorder records what a follower hands it and fails on demand.
type followRecorder struct {
	mu    sync.Mutex
	seen  []string
	fails map[string]error // text → error to return once
}

func (r *followRecorder) Follow(_ context.Context, m core.Message, c core.Conversation) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err, ok := r.fails[m.Text]; ok {
		delete(r.fails, m.Text)
		r.seen = append(r.seen, "!"+m.Text)
		return err
	}
	if c.ID != m.ConversationID {
		return bridge.Permanent("wrong conversation", nil)
	}
	r.seen = append(r.seen, m.Text)
	return nil
}

func (r *followRecorder) texts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func TestFollowerFollowsTheLog(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bus := memory.New(quietLogger())
	defer bus.Close()
	now := time.Now()
	say := func(text string, at time.Time) {
		t.Helper()
		_, err := store.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "42",
			Message: core.Message{Kind: core.KindText, Text: text, CreatedAt: at}})
		if err != nil {
			t.Fatal(err)
		}
	}
	say("history", now.Add(-time.Hour)) // before the follower's first start: skipped

	rec := &followRecorder{fails: map[string]error{
		"two":   errors.New("slack is down"),            // transient: retried
		"three": bridge.Permanent("cannot render", nil), // permanent: skipped
	}}
	run := func() (stop func()) {
		f, err := bridge.NewFollower(bridge.FollowerConfig{Name: "slack", Handler: rec, Store: store, Bus: bus,
			Poll: 20 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	stop := run()
	waitFor(t, "the follower's first start", func() bool {
		_, err := store.Setting(ctx, "follow.slack")
		return err == nil
	})
	for _, text := range []string{"one", "two", "three", "four"} {
		say(text, time.Now())
	}
	waitFor(t, "four to be followed", func() bool {
		got := rec.texts()
		return len(got) > 0 && got[len(got)-1] == "four"
	})
	stop()
	if got, want := fmt.Sprint(rec.texts()), "[one !two two !three four]"; got != want {
		t.Fatalf("followed %s, want %s", got, want)
	}

	// A restart resumes after the cursor: nothing handled again.
	say("five", time.Now())
	stop = run()
	waitFor(t, "five to be followed", func() bool {
		got := rec.texts()
		return got[len(got)-1] == "five"
	})
	stop()
	if got, want := fmt.Sprint(rec.texts()), "[one !two two !three four five]"; got != want {
		t.Fatalf("after restart followed %s, want %s", got, want)
	}
}

var waitFor = wait.For

// cursorPeeker reads the follower's saved cursor when it is handed the
// message with text at.
type cursorPeeker struct {
	store core.Store
	at    string
	saved chan string
	hold  chan struct{} // nil, or handling waits until it is closed
}

func (p *cursorPeeker) Follow(ctx context.Context, m core.Message, _ core.Conversation) error {
	if p.hold != nil {
		<-p.hold
	}
	if m.Text == p.at {
		v, err := p.store.Setting(ctx, "follow.slack")
		if err != nil {
			return err
		}
		p.saved <- v
	}
	return nil
}

// A backlog of several batches saves the cursor after each batch, so that
// a crash replays one batch at most, not everything since the backlog
// began.
func TestFollowerSavesTheCursorThroughABacklog(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const batch = 10
	// The follower may start on the backlog while it is being written: it
	// then handles the first messages as one short batch, waiting in the
	// first until the whole backlog is there.
	p := &cursorPeeker{store: store, at: fmt.Sprint("m", 2*batch+1), saved: make(chan string, 1), hold: make(chan struct{})}
	f, err := bridge.NewFollower(bridge.FollowerConfig{Name: "slack", Handler: p, Store: store, Batch: batch,
		Poll: time.Hour, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the follower's first start", func() bool { _, err := store.Setting(ctx, "follow.slack"); return err == nil })
	var ids []int64
	for i := 1; i <= 3*batch+5; i++ {
		in, err := store.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "42",
			Message: core.Message{Kind: core.KindText, Text: fmt.Sprint("m", i), CreatedAt: time.Now()}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.Message.ID)
	}
	close(p.hold)
	f.Wake()
	select {
	case v := <-p.saved:
		// Handling message 21, the full batch before its own is saved:
		// the cursor is less than a batch behind it.
		at, _, _ := strings.Cut(v, " ")
		id, err := strconv.ParseInt(at, 10, 64)
		if m := ids[2*batch]; err != nil || id < m-batch || id >= m {
			t.Fatalf("cursor while handling message %d of the backlog: %q, want %d to %d", m, v, m-batch, m-1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower did not reach the third batch")
	}
}

// A follower that starts while the bus is down (the lease moved during an
// outage) reads the log every poll, and subscribes once the bus is back.
func TestFollowerStartsWhileTheBusIsDown(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	mem := memory.New(quietLogger())
	defer mem.Close()
	down, subs := &atomic.Bool{}, &atomic.Int32{}
	down.Store(true)
	rec := &followRecorder{}
	f, err := bridge.NewFollower(bridge.FollowerConfig{Name: "slack", Handler: rec, Store: store,
		Bus: downBus{Bus: mem, down: down, subs: subs}, Poll: 20 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()
	waitFor(t, "the follower's first start", func() bool {
		_, err := store.Setting(ctx, "follow.slack")
		return err == nil
	})
	if _, err := store.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: "42",
		Message: core.Message{Kind: core.KindText, Text: "one", CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one to be followed", func() bool { return fmt.Sprint(rec.texts()) == "[one]" })
	down.Store(false)
	waitFor(t, "a subscription once the bus is back", func() bool { return subs.Load() > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
