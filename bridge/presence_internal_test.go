package bridge

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The merge and expiry rules of ClusterPresence, driven message by message
// with explicit times: no bus, no goroutines, no clock.

// nopBus satisfies Bus for presences that are never Run.
type nopBus struct{ Bus }

func newTestPresence(t *testing.T, node string) *ClusterPresence {
	t.Helper()
	p, err := NewClusterPresence(PresenceConfig{Node: node, Bus: nopBus{}, Heartbeat: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// st builds a message of another node's process (epoch) with seq.
func st(op PresenceOp, epoch int64, seq uint64) PresenceState {
	return PresenceState{Op: op, Epoch: epoch, Seq: seq, EveryMS: 1000}
}

func with(s PresenceState, f func(*PresenceState)) PresenceState { f(&s); return s }

func agents(pairs ...int64) func(*PresenceState) {
	return func(s *PresenceState) {
		for i := 0; i+1 < len(pairs); i += 2 {
			s.Agents = append(s.Agents, [2]int64{pairs[i], pairs[i+1]})
		}
	}
}

func contacts(pairs ...int64) func(*PresenceState) {
	return func(s *PresenceState) {
		for i := 0; i+1 < len(pairs); i += 2 {
			s.Contacts = append(s.Contacts, [2]int64{pairs[i], pairs[i+1]})
		}
	}
}

func flag(agent int64, f string, v bool, at int64, by string) func(*PresenceState) {
	return func(s *PresenceState) {
		s.Flags = append(s.Flags, PresenceFlag{Agent: agent, Flag: f, Value: v, At: at, By: by})
	}
}

func avail(t *testing.T, p *ClusterPresence) []int64 {
	t.Helper()
	ids, err := p.Available(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

type step struct {
	node string
	s    PresenceState
	at   time.Duration // after t0
}

func TestPresenceMerge(t *testing.T) {
	for _, tc := range []struct {
		name      string
		steps     []step
		expireAt  time.Duration // 0: no expiry pass
		available []int64
		connected []int64 // agents Connected reports
		contacts  []int64 // contacts ContactConnected reports
		nodes     int
	}{
		{
			name:      "snapshot then deltas",
			steps:     []step{{"b", with(st(PresenceSnapshot, 5, 1), agents(1, 1, 2, 2)), 0}, {"b", with(st(PresenceDelta, 5, 2), agents(2, 0)), 0}},
			available: []int64{1}, connected: []int64{1}, nodes: 2,
		},
		{
			name: "two nodes add up",
			steps: []step{
				{"b", with(st(PresenceSnapshot, 5, 1), agents(1, 1)), 0},
				{"c", with(st(PresenceSnapshot, 7, 1), agents(1, 1, 3, 1)), 0},
				{"b", with(st(PresenceDelta, 5, 2), agents(1, 0)), 0},
			},
			available: []int64{1, 3}, connected: []int64{1, 3}, nodes: 3,
		},
		{
			name: "a repeated or older message changes nothing",
			steps: []step{
				{"b", with(st(PresenceSnapshot, 5, 1), agents(1, 1)), 0},
				{"b", with(st(PresenceDelta, 5, 2), agents(1, 0)), 0},
				{"b", with(st(PresenceDelta, 5, 1), agents(1, 3)), 0},
				{"b", with(st(PresenceDelta, 5, 2), agents(1, 3)), 0},
			},
			available: nil, nodes: 2,
		},
		{
			name: "heartbeat replaces the agents, keeps the contacts",
			steps: []step{
				{"b", with(with(st(PresenceSnapshot, 5, 1), agents(1, 1, 2, 1)), contacts(10, 1)), 0},
				{"b", with(st(PresenceHeartbeat, 5, 2), agents(2, 1)), 0},
			},
			available: []int64{2}, connected: []int64{2}, contacts: []int64{10}, nodes: 2,
		},
		{
			name: "snapshot replaces contacts",
			steps: []step{
				{"b", with(st(PresenceSnapshot, 5, 1), contacts(10, 1, 11, 2)), 0},
				{"b", with(st(PresenceSnapshot, 5, 2), contacts(12, 1)), 0},
			},
			contacts: []int64{12}, nodes: 2,
		},
		{
			name: "leave drops the node at once",
			steps: []step{
				{"b", with(with(st(PresenceSnapshot, 5, 1), agents(1, 1)), contacts(10, 1)), 0},
				{"b", st(PresenceLeave, 5, 2), 0},
			},
			nodes: 1,
		},
		{
			name: "a restart replaces the earlier process; its stragglers are ignored",
			steps: []step{
				{"b", with(with(st(PresenceSnapshot, 5, 1), agents(1, 1)), contacts(10, 1)), 0},
				{"b", with(st(PresenceSnapshot, 6, 1), agents(2, 1)), 0},
				{"b", with(st(PresenceDelta, 5, 2), agents(3, 1)), 0},
			},
			available: []int64{2}, connected: []int64{2}, nodes: 2,
		},
		{
			name: "a restart whose clock stepped back replaces the earlier process at its first message",
			steps: []step{
				{"b", with(with(st(PresenceSnapshot, 9, 1), agents(1, 1)), contacts(10, 1)), 0},
				{"b", st(PresenceSync, 6, 1), 0},
				{"b", with(st(PresenceSnapshot, 6, 2), agents(2, 1)), 0},
				{"b", with(st(PresenceDelta, 9, 2), agents(3, 1)), 0}, // a straggler of the replaced process
				{"b", with(st(PresenceDelta, 6, 3), agents(4, 1)), 0},
			},
			available: []int64{2, 4}, connected: []int64{2, 4}, nodes: 2,
		},
		{
			name: "a smaller epoch after the first message is an earlier process",
			steps: []step{
				{"b", with(st(PresenceSnapshot, 9, 1), agents(1, 1)), 0},
				{"b", with(st(PresenceDelta, 6, 3), agents(2, 1)), 0},
			},
			available: []int64{1}, connected: []int64{1}, nodes: 2,
		},
		{
			name: "silent for three heartbeats: expired",
			steps: []step{
				{"b", with(with(st(PresenceSnapshot, 5, 1), agents(1, 1)), contacts(10, 1)), 0},
				{"c", with(st(PresenceSnapshot, 7, 1), agents(2, 1)), 2 * time.Second},
			},
			expireAt:  3*time.Second + time.Millisecond,
			available: []int64{2}, connected: []int64{2}, nodes: 2,
		},
		{
			name: "heard from within three heartbeats: kept",
			steps: []step{
				{"b", with(st(PresenceSnapshot, 5, 1), agents(1, 1)), 0},
				{"b", with(st(PresenceHeartbeat, 5, 2), agents(1, 1)), 2 * time.Second},
			},
			expireAt:  5 * time.Second,
			available: []int64{1}, connected: []int64{1}, nodes: 2,
		},
		{
			name:      "flags: on without a connection is available",
			steps:     []step{{"b", with(st(PresenceDelta, 5, 1), flag(4, FlagOn, true, 100, "b")), 0}},
			available: []int64{4}, nodes: 2,
		},
		{
			name: "flags: the later write wins, whatever the order of arrival",
			steps: []step{
				{"b", with(st(PresenceDelta, 5, 1), flag(4, FlagOn, false, 200, "b")), 0},
				{"c", with(st(PresenceDelta, 7, 1), flag(4, FlagOn, true, 100, "c")), 0},
			},
			nodes: 3,
		},
		{
			name: "flags: same time, the greater node wins",
			steps: []step{
				{"c", with(st(PresenceDelta, 7, 1), flag(4, FlagOn, true, 100, "c")), 0},
				{"b", with(st(PresenceDelta, 5, 1), flag(4, FlagOn, false, 100, "b")), 0},
			},
			available: []int64{4}, nodes: 3,
		},
		{
			name: "flags: away beats a connection; they outlive the node that set them",
			steps: []step{
				{"b", with(with(st(PresenceSnapshot, 5, 1), agents(1, 1)), flag(1, FlagAway, true, 100, "b")), 0},
				{"c", with(with(st(PresenceSnapshot, 7, 1), agents(1, 1)), flag(2, FlagOn, true, 100, "b")), 0},
				{"b", st(PresenceLeave, 5, 2), 0},
			},
			available: []int64{2}, connected: []int64{1}, nodes: 2,
		},
		{
			name:  "own messages are ignored",
			steps: []step{{"a", with(st(PresenceSnapshot, 5, 1), agents(1, 1)), 0}},
			nodes: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPresence(t, "a")
			for _, s := range tc.steps {
				p.apply(s.node, s.s, t0.Add(s.at))
			}
			if tc.expireAt > 0 {
				p.expire(t0.Add(tc.expireAt))
			}
			if got := avail(t, p); !slices.Equal(got, tc.available) {
				t.Errorf("Available = %v, want %v", got, tc.available)
			}
			for id := int64(1); id <= 4; id++ {
				if got, want := p.Connected(id), slices.Contains(tc.connected, id); got != want {
					t.Errorf("Connected(%d) = %v, want %v", id, got, want)
				}
			}
			for id := int64(10); id <= 12; id++ {
				if got, want := p.ContactConnected(id), slices.Contains(tc.contacts, id); got != want {
					t.Errorf("ContactConnected(%d) = %v, want %v", id, got, want)
				}
			}
			if got := p.Nodes(); got != tc.nodes {
				t.Errorf("Nodes = %d, want %d", got, tc.nodes)
			}
		})
	}
}

// A gap in a node's seq, or a node first heard from mid-stream, makes the
// receiver ask that node for a snapshot at its next heartbeat, once per
// heartbeat; a snapshot ends the asking.
func TestPresenceAsksSnapshotAfterGap(t *testing.T) {
	p := newTestPresence(t, "a")
	asked := func(at time.Duration) []string {
		p.expire(t0.Add(at))
		var got []string
		for _, s := range p.pending() {
			if s.Op == PresenceSync {
				got = append(got, s.Want)
			}
		}
		return got
	}
	p.apply("b", with(st(PresenceSnapshot, 5, 1), agents(1, 1)), t0)
	p.apply("b", with(st(PresenceDelta, 5, 3), agents(2, 1)), t0) // 2 is missing
	if got := avail(t, p); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("after a gap, Available = %v: what arrived should still count", got)
	}
	if got := asked(500 * time.Millisecond); len(got) != 0 {
		t.Errorf("asked %v before a heartbeat passed", got)
	}
	if got := asked(time.Second); !slices.Equal(got, []string{"b"}) {
		t.Errorf("asked %v, want [b]", got)
	}
	if got := asked(1500 * time.Millisecond); len(got) != 0 {
		t.Errorf("asked %v again within a heartbeat", got)
	}
	p.apply("b", with(st(PresenceSnapshot, 5, 4), agents(2, 1)), t0.Add(1600*time.Millisecond))
	if got := asked(3 * time.Second); len(got) != 0 {
		t.Errorf("asked %v after the snapshot", got)
	}
	if got := avail(t, p); !slices.Equal(got, []int64{2}) {
		t.Errorf("after the snapshot, Available = %v, want [2]", got)
	}

	p.apply("c", with(st(PresenceHeartbeat, 9, 40), agents(3, 1)), t0.Add(3*time.Second))
	if got := asked(4 * time.Second); !slices.Equal(got, []string{"c"}) {
		t.Errorf("a node first heard from mid-stream: asked %v, want [c]", got)
	}
}

// A sync from another node (for everyone, or naming this node) makes the
// next publication a snapshot with everything; one naming another node
// does not.
func TestPresenceAnswersSync(t *testing.T) {
	p := newTestPresence(t, "a")
	p.Connect(1)
	p.ConnectContact(10)
	p.SetOn(2, true)
	if got := p.pending(); len(got) != 1 || got[0].Op != PresenceDelta {
		t.Fatalf("pending = %+v, want one delta", got)
	}
	p.apply("b", with(st(PresenceSync, 5, 1), func(s *PresenceState) { s.Want = "c" }), t0)
	if got := p.pending(); len(got) != 0 {
		t.Fatalf("a sync for another node: pending = %+v", got)
	}
	p.apply("b", with(st(PresenceSync, 5, 2), func(s *PresenceState) { s.Want = "a" }), t0)
	got := p.pending()
	if len(got) != 1 || got[0].Op != PresenceSnapshot {
		t.Fatalf("pending = %+v, want one snapshot", got)
	}
	s := got[0]
	if !slices.Equal(s.Agents, [][2]int64{{1, 1}}) || !slices.Equal(s.Contacts, [][2]int64{{10, 1}}) || len(s.Flags) != 1 || !s.Flags[0].Value {
		t.Errorf("snapshot = %+v", s)
	}
	if got[0].Seq != 2 {
		t.Errorf("snapshot seq = %d, want 2 (after the delta)", got[0].Seq)
	}
}

// A big snapshot continues in deltas, so no message grows without bound,
// and a receiver ends up with every contact.
func TestPresenceChunksBigSnapshots(t *testing.T) {
	a := newTestPresence(t, "a")
	n := 2*maxCountsPerMessage + 5
	for id := 1; id <= n; id++ {
		a.ConnectContact(int64(id))
	}
	a.mu.Lock()
	a.snapshotDue = true
	a.mu.Unlock()
	msgs := a.pending()
	if len(msgs) != 3 || msgs[0].Op != PresenceSnapshot || msgs[1].Op != PresenceDelta || msgs[2].Op != PresenceDelta {
		t.Fatalf("got %d messages, want a snapshot and 2 deltas", len(msgs))
	}
	b := newTestPresence(t, "b")
	for _, s := range msgs {
		if len(s.Contacts) > maxCountsPerMessage {
			t.Errorf("a message carries %d contacts", len(s.Contacts))
		}
		b.apply("a", s, t0)
	}
	for _, id := range []int64{1, maxCountsPerMessage + 1, int64(n)} {
		if !b.ContactConnected(id) {
			t.Errorf("contact %d not connected on the receiver", id)
		}
	}
	b.mu.Lock()
	synced := b.nodes["a"].synced
	b.mu.Unlock()
	if !synced {
		t.Error("receiver saw a gap in a chunked snapshot")
	}
}

// Local changes are seen at once, and OnChange runs synchronously when an
// agent becomes available on this node; for another node's news it runs
// from the notifier.
func TestPresenceLocalAndOnChange(t *testing.T) {
	p := newTestPresence(t, "a")
	var mu sync.Mutex
	var calls []int64
	p.OnChange(func(id int64) { mu.Lock(); calls = append(calls, id); mu.Unlock() })
	got := func() []int64 { mu.Lock(); defer mu.Unlock(); return slices.Clone(calls) }

	release := p.Connect(1)
	if !slices.Equal(avail(t, p), []int64{1}) || !p.Connected(1) {
		t.Fatal("a local Connect is not visible at once")
	}
	p.Connect(1)() // a second connection coming and going changes nothing
	release()
	release() // twice is harmless
	if len(avail(t, p)) != 0 || p.Connected(1) {
		t.Fatal("released connections still count")
	}
	p.SetAway(2, true)
	p.SetOn(2, true)
	p.SetAway(2, false) // back: available through /on
	if want := []int64{1, 2}; !slices.Equal(got(), want) {
		t.Errorf("OnChange calls = %v, want %v", got(), want)
	}
	rc := p.ConnectContact(10)
	if !p.ContactConnected(10) {
		t.Error("ContactConnected false while connected")
	}
	rc()
	rc()
	if p.ContactConnected(10) {
		t.Error("ContactConnected true after release")
	}

	// Remote: queued for the notifier.
	p.apply("b", with(st(PresenceSnapshot, 5, 1), agents(3, 1)), t0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.notify(ctx); close(done) }()
	waitUntil(t, "OnChange for the remote agent", func() bool { return slices.Contains(got(), 3) })
	cancel()
	<-done
}

func TestPresenceStateValidate(t *testing.T) {
	ok := with(st(PresenceDelta, 5, 1), agents(1, 1))
	for _, tc := range []struct {
		name string
		s    PresenceState
		want string
	}{
		{"valid", ok, ""},
		{"no op", with(ok, func(s *PresenceState) { s.Op = "" }), "missing op"},
		{"bad op", with(ok, func(s *PresenceState) { s.Op = "x" }), `unknown op "x"`},
		{"no epoch", with(ok, func(s *PresenceState) { s.Epoch = 0 }), "epoch 0"},
		{"no seq", with(ok, func(s *PresenceState) { s.Seq = 0 }), "seq is 0"},
		{"no interval", with(ok, func(s *PresenceState) { s.EveryMS = 0 }), "every_ms 0"},
		{"bad id", with(ok, agents(0, 1)), "agents[1]"},
		{"negative count", with(ok, contacts(5, -1)), "contacts[0]"},
		{"heartbeat with contacts", with(st(PresenceHeartbeat, 5, 1), contacts(5, 1)), "no contacts"},
		{"bad flag", with(ok, flag(1, "busy", true, 1, "b")), `unknown flag "busy"`},
		{"flag without node", with(ok, flag(1, FlagOn, true, 1, "")), "missing by"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validate = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validate = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestNewClusterPresenceValidates(t *testing.T) {
	_, err := NewClusterPresence(PresenceConfig{Heartbeat: -time.Second})
	for _, want := range []string{"Node is empty", "Bus is nil", "Heartbeat -1s is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// waitUntil polls cond until it holds, failing the test after a generous
// bound (not a timing assertion: it only keeps a broken test from hanging).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Epochs are wall-clock start times whose low bits are random: two
// processes started in the same instant still differ.
func TestNewEpoch(t *testing.T) {
	before := time.Now().UnixNano()
	seen := map[int64]bool{}
	for range 16 {
		e := newEpoch()
		if e <= 0 || e < before&^(1<<epochRandBits-1) {
			t.Fatalf("epoch %d: not positive, or before the process started (%d)", e, before)
		}
		seen[e] = true
	}
	if len(seen) < 2 {
		t.Fatal("16 epochs taken in the same instant are all the same: no random tie-breaker")
	}
}
