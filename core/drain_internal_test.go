package core

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// queueStore is the part of a Store a drain and an offline reply use: a
// queue of waiting conversations, assignments that succeed, and appends. It
// records what the drain saw.
type queueStore struct {
	Store // nil: only the methods below are called

	mu          sync.Mutex
	svc         *Service
	queued      []Conversation
	queueReads  int
	sawWaiting  []bool // the service's drainWaiting at each queue read
	failReads   int    // queue reads to fail before the next succeeds
	assignments int
	replies     []int64 // conversations given a bot message
	counts      map[int64]int
	onCounts    func()         // called at each OpenCounts
	beforeRead  func(id int64) // called at each Conversation
}

func (q *queueStore) Queue(context.Context, int) ([]Conversation, error) {
	q.svc.waitMu.Lock()
	waiting := q.svc.drainWaiting
	q.svc.waitMu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queueReads++
	q.sawWaiting = append(q.sawWaiting, waiting)
	if q.failReads > 0 {
		q.failReads--
		return nil, errors.New("connection reset")
	}
	return append([]Conversation(nil), q.queued...), nil
}

// Settings has no declines (loadDeclines).
func (q *queueStore) Settings(context.Context, string, string, int) ([]Setting, error) {
	return nil, nil
}

func (q *queueStore) OpenCounts(context.Context) (map[int64]int, error) {
	if q.onCounts != nil {
		q.onCounts()
	}
	n := map[int64]int{}
	for id, c := range q.counts {
		n[id] = c
	}
	return n, nil
}

func (q *queueStore) AssignAll(_ context.Context, as []Assignment) ([]Changed, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]Changed, len(as))
	for i, a := range as {
		out[i] = Changed{Conversation: Conversation{ID: a.ConversationID, AssigneeID: a.AgentID, Status: StatusOpen}}
	}
	q.assignments += len(as)
	q.queued = q.queued[len(as):]
	return out, nil
}

func (q *queueStore) Conversation(ctx context.Context, id int64) (Conversation, error) {
	if q.beforeRead != nil {
		q.beforeRead(id)
	}
	if err := ctx.Err(); err != nil { // as a real store's read
		return Conversation{}, err
	}
	return Conversation{ID: id, Status: StatusPending}, nil
}

func (q *queueStore) MessageByDedup(ctx context.Context, _ string) (Message, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, err
	}
	return Message{}, ErrNotFound // no reply sent yet: Append counts them
}

func (q *queueStore) Append(_ context.Context, a Append) (Appended, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if a.Message.SenderKind == SenderBot {
		q.replies = append(q.replies, a.ConversationID)
	}
	return Appended{Message: a.Message}, nil
}

type noNotifier struct{}

func (noNotifier) Publish(context.Context, ...Update)   {}
func (noNotifier) Deliver(context.Context, OutboxEntry) {}

func newQueueService(cfg Config, queued ...int64) (*Service, *queueStore, *MemoryPresence) {
	q := &queueStore{}
	for _, id := range queued {
		q.queued = append(q.queued, Conversation{ID: id, Status: StatusPending})
	}
	p := NewMemoryPresence()
	s := NewService(cfg, Deps{Store: q, Presence: p, Notifier: noNotifier{}})
	q.svc = s
	p.OnChange(func(int64) {}) // the tests drain
	return s, q, p
}

func TestDrainForLeavesItToTheWaitingDrain(t *testing.T) {
	s, q, p := newQueueService(Config{Strategy: RoundRobin}, 1, 2)
	defer p.Connect(7)()
	ctx := context.Background()

	// Another drainFor is waiting for the running drain: it has not read the
	// queue yet and will serve this conversation; this one does not wait.
	s.drainWaiting = true
	if handled, _ := s.drainFor(ctx, 2); handled {
		t.Fatal("drainFor drained with a drain already waiting")
	}
	if q.queueReads != 0 || q.assignments != 0 || len(s.leftToDrain) != 1 || s.leftToDrain[0] != 2 {
		t.Fatalf("with a drain waiting: %d queue reads, %d assigned, left %v", q.queueReads, q.assignments, s.leftToDrain)
	}

	// Nobody waiting: it drains itself, and stops counting as the waiting
	// one before it reads the queue, taking what was left to it.
	s.drainWaiting = false
	if handled, drained := s.drainFor(ctx, 1); !handled || !drained {
		t.Fatal("drainFor left its conversation with no drain waiting")
	}
	if q.assignments != 2 || q.queueReads == 0 {
		t.Fatalf("drainFor assigned %d of 2 after %d queue reads", q.assignments, q.queueReads)
	}
	for i, w := range q.sawWaiting {
		if w {
			t.Errorf("queue read %d happened while the drain still counted as waiting: a conversation committed then would be left to it and missed", i)
		}
	}
	if s.drainWaiting || len(s.leftToDrain) != 0 {
		t.Errorf("after the drain: waiting %v, left %v", s.drainWaiting, s.leftToDrain)
	}
}

func TestWaitingDrainSendsTheOfflineReplies(t *testing.T) {
	s, q, _ := newQueueService(Config{Strategy: RoundRobin, OfflineReply: "away"}, 1, 2, 3)
	ctx := context.Background()
	// Nobody online. 2 and 3 are left to the waiting drain; routeNew for 1
	// becomes that drain and answers all three.
	s.drainWaiting = true
	s.routeNew(ctx, Conversation{ID: 2})
	s.routeNew(ctx, Conversation{ID: 3})
	if len(q.replies) != 0 {
		t.Fatalf("offline replies %v sent before the waiting drain ran", q.replies)
	}
	s.drainWaiting = false
	s.routeNew(ctx, Conversation{ID: 1})
	s.replies.Wait() // 2's and 3's are sent off the caller's path
	if len(q.replies) != 3 {
		t.Errorf("offline replies for %v, want 1, 2 and 3", q.replies)
	}
}

// TestRunWaitsForTheWaitingDrainsReplies: the replies a drain sends, off
// its caller's path, for the conversations left to it go out after the
// request that ran the drain has ended, and Run (whose end lets the node
// close the store) returns only once they are sent.
func TestRunWaitsForTheWaitingDrainsReplies(t *testing.T) {
	s, q, _ := newQueueService(Config{Strategy: RoundRobin, OfflineReply: "away", Redrain: time.Hour}, 1, 2, 3)
	release := make(chan struct{})
	q.beforeRead = func(id int64) {
		if id != 1 {
			<-release // the others' replies wait until the request is over
		}
	}
	s.drainWaiting = true
	s.routeNew(context.Background(), Conversation{ID: 2})
	s.routeNew(context.Background(), Conversation{ID: 3})
	s.drainWaiting = false
	ctx, cancel := context.WithCancel(context.Background())
	s.routeNew(ctx, Conversation{ID: 1})
	cancel() // the request that routed 1 is over

	runCtx, stop := context.WithCancel(context.Background())
	stop()
	ran := make(chan struct{})
	go func() { _ = s.Run(runCtx); close(ran) }()
	select {
	case <-ran:
		t.Fatal("Run returned while replies were still being sent")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-ran
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.replies) != 3 {
		t.Errorf("offline replies for %v, want 1, 2 and 3", q.replies)
	}
}

func TestWaitingDrainTriesAgain(t *testing.T) {
	old := drainRetries
	drainRetries = []time.Duration{time.Millisecond, time.Millisecond}
	defer func() { drainRetries = old }()
	s, q, p := newQueueService(Config{Strategy: RoundRobin}, 1, 2)
	defer p.Connect(7)()
	q.failReads = 2 // a store that fails twice, then recovers
	s.drainWaiting = true
	s.drainFor(context.Background(), 2)
	s.drainWaiting = false
	s.drainFor(context.Background(), 1)
	if q.assignments != 2 {
		t.Errorf("after a drain that failed twice: %d of 2 assigned (%d queue reads)", q.assignments, q.queueReads)
	}
}

func TestOfflineReplyWhenTheCallerHasGone(t *testing.T) {
	s, q, _ := newQueueService(Config{Strategy: RoundRobin, OfflineReply: "away"}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the webhook timed out after the message was committed
	s.routeNew(ctx, Conversation{ID: 1})
	if len(q.replies) != 1 {
		t.Errorf("offline replies %v, want one for 1: the message is committed", q.replies)
	}
}

// TestFullIsNotSetAfterACapacityChange: a drain that finds no room must not
// mark the queue full when capacity changed while it ran: the change's own
// drain may have read the queue already, and new conversations would then
// skip draining while an agent has room.
func TestFullIsNotSetAfterACapacityChange(t *testing.T) {
	s, q, p := newQueueService(Config{Strategy: RoundRobin, MaxOpenPerAgent: 1}, 1)
	defer p.Connect(7)()
	q.counts = map[int64]int{7: 1} // agent 7 at capacity when counted
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !s.full {
		t.Fatal("a drain that found no room did not mark the queue full")
	}
	q.onCounts = s.noteCapacity // an agent frees a slot while the drain runs
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.full {
		t.Error("the queue is marked full though capacity changed during the drain")
	}
}
