package core

import (
	"context"
	"sync"
	"testing"
)

// queueStore is the part of a Store a drain uses: a queue of waiting
// conversations and assignments that always succeed. It records what the
// drain saw.
type queueStore struct {
	Store // nil: a drain calls only the methods below

	mu          sync.Mutex
	queued      []Conversation
	queueReads  int
	sawWaiting  []bool // the service's drainWaiting at each queue read
	svc         *Service
	assignments int
}

func (q *queueStore) Queue(context.Context, int) ([]Conversation, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queueReads++
	q.sawWaiting = append(q.sawWaiting, q.svc.drainWaiting.Load())
	return append([]Conversation(nil), q.queued...), nil
}

func (q *queueStore) OpenCounts(context.Context) (map[int64]int, error) { return map[int64]int{}, nil }

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

type noNotifier struct{}

func (noNotifier) Publish(context.Context, ...Update)   {}
func (noNotifier) Deliver(context.Context, OutboxEntry) {}

func TestDrainForLeavesItToTheWaitingDrain(t *testing.T) {
	q := &queueStore{queued: []Conversation{{ID: 1, Status: StatusPending}, {ID: 2, Status: StatusPending}}}
	p := NewMemoryPresence()
	s := NewService(Config{Strategy: RoundRobin}, Deps{Store: q, Presence: p, Notifier: noNotifier{}})
	q.svc = s
	p.OnChange(func(int64) {}) // the test drains
	defer p.Connect(7)()
	ctx := context.Background()

	// Another drainFor is waiting for the running drain: it has not read the
	// queue yet and will serve this conversation; this one does not wait.
	s.drainWaiting.Store(true)
	if err := s.drainFor(ctx); err != nil {
		t.Fatal(err)
	}
	if q.queueReads != 0 || q.assignments != 0 {
		t.Fatalf("with a drain waiting, drainFor read the queue %d times and assigned %d", q.queueReads, q.assignments)
	}

	// Nobody waiting: it drains itself, and stops counting as the waiting
	// one before it reads the queue.
	s.drainWaiting.Store(false)
	if err := s.drainFor(ctx); err != nil {
		t.Fatal(err)
	}
	if q.assignments != 2 || q.queueReads == 0 {
		t.Fatalf("drainFor assigned %d of 2 after %d queue reads", q.assignments, q.queueReads)
	}
	for i, w := range q.sawWaiting {
		if w {
			t.Errorf("queue read %d happened while the drain still counted as waiting: a conversation committed then would be left to it and missed", i)
		}
	}
	if s.drainWaiting.Load() {
		t.Error("drainWaiting still set after the drain")
	}
}
