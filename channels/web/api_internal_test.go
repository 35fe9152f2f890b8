package web

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
)

// apiCountingStore counts the reads a list makes.
type apiCountingStore struct {
	core.Store
	mu    sync.Mutex
	calls map[string]int
}

func (s *apiCountingStore) count(name string) {
	s.mu.Lock()
	s.calls[name]++
	s.mu.Unlock()
}

func (s *apiCountingStore) Agents(ctx context.Context) ([]core.Agent, error) {
	s.count("Agents")
	return s.Store.Agents(ctx)
}

func (s *apiCountingStore) Agent(ctx context.Context, id int64) (core.Agent, error) {
	s.count("Agent")
	return s.Store.Agent(ctx, id)
}

func (s *apiCountingStore) Contact(ctx context.Context, id int64) (core.Contact, error) {
	s.count("Contact")
	return s.Store.Contact(ctx, id)
}

func (s *apiCountingStore) Contacts(ctx context.Context, ids []int64) ([]core.Contact, error) {
	s.count("Contacts")
	return s.Store.Contacts(ctx, ids)
}

func (s *apiCountingStore) Messages(ctx context.Context, q core.MessageQuery) ([]core.Message, error) {
	s.count("Messages")
	return s.Store.Messages(ctx, q)
}

func (s *apiCountingStore) LastMessages(ctx context.Context, ids []int64) (map[int64]core.Message, error) {
	s.count("LastMessages")
	return s.Store.LastMessages(ctx, ids)
}

// A full page of the conversation list costs three reads beyond the list
// itself, however many conversations it holds, plus one per conversation
// waiting for an agent (its newest message the customer's, unread), for the
// unread count.
func TestAPIListReadsAreBounded(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	agent, err := st.CreateAgent(ctx, core.Agent{Email: "a@example.com", Name: "A", Role: core.RoleAgent, Active: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range apiMaxConversations {
		in, err := st.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: fmt.Sprint(i), Name: fmt.Sprint("C", i),
			Message: core.Message{Kind: core.KindText, Text: fmt.Sprint("hello ", i)}})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := st.MarkUpTo(ctx, core.Receipt{ConversationID: in.Conversation.ID, UpToSeq: in.Message.Seq, Status: core.MsgRead}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Assign(ctx, core.Assignment{ConversationID: in.Conversation.ID, AgentID: agent.ID,
				Event: core.Message{SenderKind: core.SenderSystem, Kind: core.KindEvent, Visibility: core.Public,
					Event: &core.Event{Type: core.EventAssigned, AgentID: agent.ID}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cs, err := st.Conversations(ctx, core.ConversationFilter{Limit: apiMaxConversations})
	if err != nil || len(cs) != apiMaxConversations {
		t.Fatalf("%d conversations, %v", len(cs), err)
	}
	counting := &apiCountingStore{Store: st, calls: map[string]int{}}
	a := &api{store: counting}
	views, err := a.conversationViews(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"Agents": 1, "Contacts": 1, "LastMessages": 1, "Messages": apiMaxConversations / 2}
	if fmt.Sprint(counting.calls) != fmt.Sprint(want) {
		t.Errorf("store reads for %d conversations: %v, want %v", len(cs), counting.calls, want)
	}
	for i, v := range views {
		c := cs[i]
		if v.ID != c.ID || v.Contact.Name == "" || v.LastMessage == nil || v.LastMessage.Kind != core.KindText ||
			(c.AssigneeID != 0) != (v.Assignee != nil) || v.Assignee != nil && v.Assignee.Name != "A" ||
			v.Unread != map[bool]int{true: 0, false: 1}[c.AssigneeID != 0] {
			t.Fatalf("view %d = %+v for %+v", i, v, c)
		}
	}
}

// apiTestClock is a settable clock.
type apiTestClock struct{ now atomic.Int64 }

func (c *apiTestClock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *apiTestClock) Advance(d time.Duration) { c.now.Add(int64(d)) }

func TestLoginThrottle(t *testing.T) {
	const window = time.Minute
	newThrottle := func() (*loginThrottle, *apiTestClock) {
		clk := &apiTestClock{}
		clk.now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
		l := newLoginThrottle(3, 5, window)
		l.now = clk.Now
		return l, clk
	}
	mustBegin := func(t *testing.T, l *loginThrottle, account, ip string) loginAttempt {
		t.Helper()
		at, wait := l.begin(account, ip)
		if wait != 0 {
			t.Fatalf("begin(%s, %s) refused for %v", account, ip, wait)
		}
		return at
	}
	refused := func(t *testing.T, l *loginThrottle, account, ip string, want time.Duration) {
		t.Helper()
		if _, wait := l.begin(account, ip); wait != want {
			t.Fatalf("begin(%s, %s): wait %v, want %v", account, ip, wait, want)
		}
	}

	t.Run("account limit and sliding window", func(t *testing.T) {
		l, clk := newThrottle()
		mustBegin(t, l, "a", "ip1")
		clk.Advance(10 * time.Second)
		mustBegin(t, l, "a", "ip2")
		mustBegin(t, l, "a", "ip3")
		refused(t, l, "a", "ip4", 50*time.Second) // until the first failure is a minute old
		mustBegin(t, l, "b", "ip1")               // another account is fine
		clk.Advance(50 * time.Second)
		mustBegin(t, l, "a", "ip4") // one failure left the window: one more try
		refused(t, l, "a", "ip4", 10*time.Second)
		clk.Advance(window)
		mustBegin(t, l, "a", "ip4")
	})
	t.Run("address limit across accounts", func(t *testing.T) {
		l, _ := newThrottle()
		for i := range 5 {
			mustBegin(t, l, fmt.Sprint("acct", i), "ip")
		}
		refused(t, l, "fresh", "ip", window)
		mustBegin(t, l, "fresh", "other-ip")
	})
	t.Run("success forgives the account, not the address", func(t *testing.T) {
		l, _ := newThrottle()
		mustBegin(t, l, "a", "ip")
		mustBegin(t, l, "a", "ip")
		mustBegin(t, l, "x", "ip")
		l.succeeded(mustBegin(t, l, "a", "ip")) // the right password at last
		// The account starts afresh; the address keeps its three failures.
		mustBegin(t, l, "a", "ip")
		mustBegin(t, l, "y", "ip")
		refused(t, l, "z", "ip", window)
	})
	t.Run("attempts in flight count", func(t *testing.T) {
		l, _ := newThrottle()
		var pending []loginAttempt
		for range 3 {
			pending = append(pending, mustBegin(t, l, "a", "ip"))
		}
		refused(t, l, "a", "ip", window) // a fourth concurrent guess waits
		l.abandon(pending[0])            // a store error: neither success nor failure
		mustBegin(t, l, "a", "ip")
	})
	t.Run("sweep forgets old keys", func(t *testing.T) {
		l, clk := newThrottle()
		mustBegin(t, l, "a", "ip")
		clk.Advance(window)
		l.sweep()
		if len(l.accounts) != 0 || len(l.ips) != 0 {
			t.Fatalf("after sweep: %v %v", l.accounts, l.ips)
		}
	})
}

func TestLoginIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":      "2001:db8:1:2::/64",
		"::ffff:192.0.2.7":          "::ffff:192.0.2.7",
		"fe80::1":                   "fe80::/64",
		"2001:db8:1:3:3:4:5:6":      "2001:db8:1:3::/64",
		"2001:db8:1:2:3:4:5:6%eth0": "2001:db8:1:2::/64",
	} {
		if got := ipKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("ipKey(%s) = %s, want %s", in, got, want)
		}
	}
	if got := ipKey(netip.Addr{}); got == "" {
		t.Error("the zero address needs a key too")
	}
}
