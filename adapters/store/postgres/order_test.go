package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
)

// TestFeedFollowerMissesNothing: three stores on one schema stand for three
// nodes, each with many concurrent writers (appends to shared conversations,
// ingests from new customers, assignments), while a reader on a fourth
// follows the feed with its cursor, as an agent's stream does. IDs must
// become visible in commit order: the reader never sees an ID at or below
// its cursor, and at the end it has seen every message, exactly once.
func TestFeedFollowerMissesNothing(t *testing.T) {
	dsn := freshSchema(t)
	ctx := context.Background()
	nodes := []*postgres.Store{
		open(t, dsn, postgres.Options{}),
		open(t, dsn, postgres.Options{MaxBatch: 1}),
		open(t, dsn, postgres.Options{MaxBatch: 8}),
	}
	reader := open(t, dsn, postgres.Options{})

	const convs = 6
	var cs []int64
	for i := range convs {
		in, err := nodes[0].Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(i),
			Message: core.Message{Kind: core.KindText, Text: "hi"}})
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, in.Conversation.ID)
	}
	agent, err := nodes[0].CreateAgent(ctx, core.Agent{Email: "a@example.com", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}

	// The reader: follow the feed until told to stop and caught up.
	stop := make(chan struct{})
	type result struct {
		seen []int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		var cursor int64
		stopping := false
		for {
			ms, err := reader.Feed(ctx, cursor, 50)
			if err != nil {
				r.err = err
				break
			}
			for _, m := range ms {
				if m.ID <= cursor {
					r.err = fmt.Errorf("feed returned id %d after cursor %d", m.ID, cursor)
					done <- r
					return
				}
				cursor = m.ID
				r.seen = append(r.seen, m.ID)
			}
			if len(ms) == 0 {
				if stopping {
					break
				}
				select {
				case <-stop:
					stopping = true // one more empty read after the writers are done
				default:
				}
			}
		}
		done <- r
	}()

	const workers, each = 8, 40
	var mu sync.Mutex
	var acked []int64 // IDs of the messages whose writes were acknowledged
	ack := func(ids ...int64) {
		mu.Lock()
		acked = append(acked, ids...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for n, s := range nodes {
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					switch i % 10 {
					case 0: // a new customer
						in, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: fmt.Sprintf("%d-%d-%d", n, w, i),
							Message: core.Message{Kind: core.KindText, Text: "new", DedupKey: fmt.Sprintf("p:wa:%d-%d-%d", n, w, i)}})
						if err != nil {
							t.Error(err)
							return
						}
						ack(in.Message.ID)
					case 5: // take it, or fail: someone else did
						in, err := s.Ingest(ctx, core.Inbound{Channel: "tg", ExternalID: fmt.Sprintf("%d-%d-%d", n, w, i),
							Message: core.Message{Kind: core.KindText, Text: "take me"}})
						if err != nil {
							t.Error(err)
							return
						}
						ack(in.Message.ID)
						ch, err := s.Assign(ctx, core.Assignment{ConversationID: in.Conversation.ID, AgentID: agent.ID})
						if err != nil {
							t.Error(err)
							return
						}
						ack(ch.Event.ID)
					default:
						r, err := s.Append(ctx, core.Append{ConversationID: cs[(n+w+i)%convs], Deliver: i%3 == 0,
							Message: core.Message{SenderKind: core.SenderAgent, SenderID: agent.ID, Text: "reply"}})
						if err != nil {
							t.Error(err)
							return
						}
						ack(r.Message.ID)
					}
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the feed reader did not catch up")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}

	// Everything stored, read afresh, is what the follower saw.
	var all []int64
	var cursor int64
	for {
		ms, err := nodes[2].Feed(ctx, cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		for _, m := range ms {
			all = append(all, m.ID)
		}
		cursor = ms[len(ms)-1].ID
	}
	if !slices.Equal(r.seen, all) {
		t.Fatalf("the follower saw %d messages, the store holds %d; first difference at %d",
			len(r.seen), len(all), firstDiff(r.seen, all))
	}
	if want := convs + len(acked); len(all) != want {
		t.Errorf("%d messages stored, want %d (%d acknowledged writes)", len(all), want, len(acked))
	}
	for _, id := range acked {
		if _, ok := slices.BinarySearch(all, id); !ok {
			t.Errorf("acknowledged message %d is not in the feed", id)
		}
	}
	// Per conversation, sequence numbers are gapless and follow ID order.
	for _, c := range cs {
		ms, err := reader.Messages(ctx, core.MessageQuery{ConversationID: c, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range ms {
			if m.Seq != int64(i+1) || i > 0 && m.ID <= ms[i-1].ID {
				t.Fatalf("conversation %d: message %d has seq %d id %d", c, i, m.Seq, m.ID)
			}
		}
	}
}

func firstDiff(a, b []int64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCapacityAcrossNodes: agents taking conversations from three nodes at
// once never exceed max_open_per_agent, each conversation goes to one, and
// the assignments refused leave no hole in the message IDs.
func TestCapacityAcrossNodes(t *testing.T) {
	dsn := freshSchema(t)
	ctx := context.Background()
	nodes := []*postgres.Store{
		open(t, dsn, postgres.Options{}),
		open(t, dsn, postgres.Options{MaxBatch: 1}),
		open(t, dsn, postgres.Options{}),
	}
	const maxOpen, convs = 3, 30
	var agents []int64
	for i := range 4 {
		a, err := nodes[0].CreateAgent(ctx, core.Agent{Email: fmt.Sprintf("a%d@example.com", i), Active: true})
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, a.ID)
	}
	var cs []int64
	for i := range convs {
		in, err := nodes[0].Ingest(ctx, core.Inbound{Channel: "web", ExternalID: strconv.Itoa(i),
			Message: core.Message{Kind: core.KindText, Text: "hi"}})
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, in.Conversation.ID)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := map[int64]int{} // conversation → assignments that succeeded
	start := make(chan struct{})
	for n, s := range nodes {
		for _, a := range agents {
			wg.Go(func() {
				<-start
				for i, c := range cs {
					if (i+n)%2 == 0 {
						continue
					}
					_, err := s.Assign(ctx, core.Assignment{ConversationID: c, AgentID: a, MaxOpen: maxOpen})
					switch {
					case err == nil:
						mu.Lock()
						won[c]++
						mu.Unlock()
					case !errorsIsAny(err, core.ErrConflict, core.ErrCapacity):
						t.Error(err)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	for c, n := range won {
		if n != 1 {
			t.Errorf("conversation %d assigned %d times", c, n)
		}
	}
	counts, err := nodes[2].OpenCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for a, n := range counts {
		if n > maxOpen {
			t.Errorf("agent %d has %d open conversations, max %d", a, n, maxOpen)
		}
		total += n
	}
	if total != len(agents)*maxOpen {
		t.Errorf("%d conversations assigned, want %d (every agent full)", total, len(agents)*maxOpen)
	}
	// The many refused assignments drew no message IDs.
	ms, err := nodes[1].Feed(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != convs+total {
		t.Errorf("feed has %d messages, want %d customer messages and %d assignment events", len(ms), convs, total)
	}
	checkDense(t, ms)
}

// TestLastAdminAcrossNodes: another node's transaction demotes one of the
// two active admins while this node demotes the other. This node's change
// waits for that transaction (it locks the admins before its update), then
// sees its result and is refused: one active admin remains.
func TestLastAdminAcrossNodes(t *testing.T) {
	dsn := freshSchema(t)
	ctx := context.Background()
	s := open(t, dsn, postgres.Options{})
	var admins [2]core.Agent
	for i := range admins {
		a, err := s.CreateAgent(ctx, core.Agent{Email: fmt.Sprintf("admin%d@example.com", i), Role: core.RoleAdmin, Active: true})
		if err != nil {
			t.Fatal(err)
		}
		admins[i] = a
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := db.BeginTx(ctx, nil) // the other node, mid-transaction
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	if _, err := other.ExecContext(ctx, `SELECT id FROM agents WHERE role = 'admin' AND active ORDER BY id FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, `UPDATE agents SET role = 'agent' WHERE id = $1`, admins[1].ID); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	prev := admins[0]
	admins[0].Role = core.RoleAgent
	go func() { done <- s.UpdateAgent(ctx, prev, admins[0]) }()
	select {
	case err := <-done:
		t.Fatalf("the update did not wait for the other node's transaction: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, core.ErrConflict) {
		t.Fatalf("demoting the last active admin: %v, want a conflict", err)
	}
	if got, err := s.Agent(ctx, admins[0].ID); err != nil || got.Role != core.RoleAdmin || !got.Active {
		t.Errorf("the last admin after the refused demotion: %+v, %v", got, err)
	}
}
