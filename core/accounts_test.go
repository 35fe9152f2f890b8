package core_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
)

type nopNotifier struct{}

func (nopNotifier) Publish(context.Context, ...core.Update)   {}
func (nopNotifier) Deliver(context.Context, core.OutboxEntry) {}

type accounts struct {
	svc                *core.Service
	store              core.Store
	presence           *core.MemoryPresence
	admin, alice, carl core.Agent
}

// newAccounts returns a Service on a fresh SQLite store with one admin and
// two agents (all with the password "password-<name>").
func newAccounts(t *testing.T) *accounts {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	p := core.NewMemoryPresence()
	svc := core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8},
		core.Deps{Store: st, Presence: p, Notifier: nopNotifier{}})
	// Seeded at bcrypt's lowest cost: the default cost takes most of a
	// second per hash under the race detector.
	var created []core.Agent
	for _, sd := range []struct {
		name string
		role core.Role
	}{{"root", core.RoleAdmin}, {"alice", core.RoleAgent}, {"carl", core.RoleAgent}} {
		hash, err := bcrypt.GenerateFromPassword([]byte("password-"+sd.name), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		a, err := st.CreateAgent(ctx, core.Agent{Email: sd.name + "@example.com", Name: strings.ToUpper(sd.name[:1]) + sd.name[1:],
			Role: sd.role, PasswordHash: string(hash), Active: true})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, a)
	}
	return &accounts{svc: svc, store: st, presence: p, admin: created[0], alice: created[1], carl: created[2]}
}

func (a *accounts) session(t *testing.T, agentID int64, hash string) {
	t.Helper()
	if err := a.store.CreateSession(context.Background(), core.Session{TokenHash: hash, AgentID: agentID,
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func (a *accounts) hasSession(hash string) bool {
	_, err := a.store.Session(context.Background(), hash)
	return err == nil
}

func isErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func ptr[T any](v T) *T { return &v }

func TestCreateAgent(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		by       int64
		agent    core.Agent
		password string
		want     error
	}{
		{"not an admin", a.alice.ID, core.Agent{Email: "x@example.com", Name: "X"}, "long-enough", core.ErrForbidden},
		{"unknown actor", 999, core.Agent{Email: "x@example.com", Name: "X"}, "long-enough", core.ErrForbidden},
		{"bad email", a.admin.ID, core.Agent{Email: "not an email", Name: "X"}, "long-enough", core.ErrInvalid},
		{"display-name email", a.admin.ID, core.Agent{Email: "X <x@example.com>", Name: "X"}, "long-enough", core.ErrInvalid},
		{"empty name", a.admin.ID, core.Agent{Email: "x@example.com", Name: "  "}, "long-enough", core.ErrInvalid},
		{"control in name", a.admin.ID, core.Agent{Email: "x@example.com", Name: "a\nb"}, "long-enough", core.ErrInvalid},
		{"bad role", a.admin.ID, core.Agent{Email: "x@example.com", Name: "X", Role: "root"}, "long-enough", core.ErrInvalid},
		{"short password", a.admin.ID, core.Agent{Email: "x@example.com", Name: "X"}, "short", core.ErrInvalid},
		{"three characters of nine bytes", a.admin.ID, core.Agent{Email: "x@example.com", Name: "X"}, "密码好", core.ErrInvalid},
		{"taken email", a.admin.ID, core.Agent{Email: "ALICE@example.com", Name: "X"}, "long-enough", core.ErrConflict},
	} {
		if _, err := a.svc.CreateAgent(ctx, tc.by, tc.agent, tc.password); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	got, err := a.svc.CreateAgent(ctx, a.admin.ID, core.Agent{Email: "Dora@Example.com", Name: " Dora "}, "long-enough")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID == 0 || got.Email != "dora@example.com" || got.Name != "Dora" || got.Role != core.RoleAgent || !got.Active {
		t.Fatalf("created %+v", got)
	}
	stored, err := a.store.AgentByEmail(ctx, "dora@example.com")
	if err != nil || !stored.CheckPassword("long-enough") {
		t.Fatalf("stored %+v, %v", stored, err)
	}
}

func TestUpdateAgentRules(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()

	// An agent renames themselves, but changes nothing else.
	got, err := a.svc.UpdateAgent(ctx, a.alice.ID, a.alice.ID, core.AgentChange{Name: ptr(" Alice L. ")})
	if err != nil || got.Name != "Alice L." {
		t.Fatalf("rename self: %+v, %v", got, err)
	}
	_, err = a.svc.UpdateAgent(ctx, a.alice.ID, a.alice.ID, core.AgentChange{Role: ptr(core.RoleAdmin)})
	isErr(t, "promote self", err, core.ErrForbidden)
	_, err = a.svc.UpdateAgent(ctx, a.alice.ID, a.carl.ID, core.AgentChange{Name: ptr("C")})
	isErr(t, "rename another", err, core.ErrForbidden)
	_, err = a.svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{Role: ptr(core.Role("owner"))})
	isErr(t, "bad role", err, core.ErrInvalid)
	_, err = a.svc.UpdateAgent(ctx, a.admin.ID, 999, core.AgentChange{Name: ptr("X")})
	isErr(t, "missing agent", err, core.ErrNotFound)

	// The only admin can neither demote nor deactivate themselves.
	_, err = a.svc.UpdateAgent(ctx, a.admin.ID, a.admin.ID, core.AgentChange{Role: ptr(core.RoleAgent)})
	isErr(t, "demote the last admin", err, core.ErrConflict)
	_, err = a.svc.UpdateAgent(ctx, a.admin.ID, a.admin.ID, core.AgentChange{Active: ptr(false)})
	isErr(t, "deactivate the last admin", err, core.ErrConflict)
	if cur, _ := a.store.Agent(ctx, a.admin.ID); cur.Role != core.RoleAdmin || !cur.Active {
		t.Fatalf("refused change was applied: %+v", cur)
	}

	// With a second admin, the first may step down.
	if _, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{Role: ptr(core.RoleAdmin)}); err != nil {
		t.Fatal(err)
	}
	got, err = a.svc.UpdateAgent(ctx, a.admin.ID, a.admin.ID, core.AgentChange{Role: ptr(core.RoleAgent)})
	if err != nil || got.Role != core.RoleAgent {
		t.Fatalf("demote with another admin: %+v, %v", got, err)
	}
	// An inactive admin does not count.
	_, err = a.svc.UpdateAgent(ctx, a.alice.ID, a.alice.ID, core.AgentChange{Active: ptr(false)})
	isErr(t, "alice is now the last admin", err, core.ErrConflict)
}

// TestAgentLinks: an admin links an agent to Work WeChat and Slack, when
// creating them or later, changes or removes the links; an id in the wrong
// form, or another agent's (Work WeChat's in any case), is refused and
// changes nothing; an agent cannot link themselves.
func TestAgentLinks(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()

	got, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{WeComUserID: ptr(" alice.l@corp "), SlackUser: ptr("U0ALICE")})
	if err != nil || got.WeComUserID != "alice.l@corp" || got.SlackUser != "U0ALICE" {
		t.Fatalf("link alice: %+v, %v", got, err)
	}
	if cur, _ := a.store.Agent(ctx, a.alice.ID); cur.WeComUserID != "alice.l@corp" || cur.SlackUser != "U0ALICE" || cur.Name != "Alice" {
		t.Fatalf("stored %+v", cur)
	}

	for _, tc := range []struct {
		name string
		by   int64
		ch   core.AgentChange
		want error
	}{
		{"self", a.carl.ID, core.AgentChange{WeComUserID: ptr("carl")}, core.ErrForbidden},
		{"another agent", a.alice.ID, core.AgentChange{SlackUser: ptr("U0CARL")}, core.ErrForbidden},
		{"wecom starting with _", a.admin.ID, core.AgentChange{WeComUserID: ptr("_carl")}, core.ErrInvalid},
		{"wecom with a space", a.admin.ID, core.AgentChange{WeComUserID: ptr("carl c")}, core.ErrInvalid},
		{"wecom of 65 bytes", a.admin.ID, core.AgentChange{WeComUserID: ptr(strings.Repeat("c", 65))}, core.ErrInvalid},
		{"slack in lower case", a.admin.ID, core.AgentChange{SlackUser: ptr("u0carl")}, core.ErrInvalid},
		{"slack channel id", a.admin.ID, core.AgentChange{SlackUser: ptr("C0CARL")}, core.ErrInvalid},
		{"alice's wecom in capitals", a.admin.ID, core.AgentChange{WeComUserID: ptr("ALICE.L@CORP")}, core.ErrConflict},
		{"alice's slack", a.admin.ID, core.AgentChange{Name: ptr("Carl C."), SlackUser: ptr("U0ALICE")}, core.ErrConflict},
	} {
		_, err := a.svc.UpdateAgent(ctx, tc.by, a.carl.ID, tc.ch)
		isErr(t, tc.name, err, tc.want)
	}
	if cur, _ := a.store.Agent(ctx, a.carl.ID); cur.WeComUserID != "" || cur.SlackUser != "" || cur.Name != "Carl" {
		t.Fatalf("a refused change was applied: %+v", cur)
	}

	// Alice keeps her own ids through another change, and can be unlinked.
	got, err = a.svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{WeComUserID: ptr("Alice.L@corp"), Name: ptr("Alice L.")})
	if err != nil || got.WeComUserID != "Alice.L@corp" || got.SlackUser != "U0ALICE" {
		t.Fatalf("relink alice: %+v, %v", got, err)
	}
	got, err = a.svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{WeComUserID: ptr(""), SlackUser: ptr(" ")})
	if err != nil || got.WeComUserID != "" || got.SlackUser != "" {
		t.Fatalf("unlink alice: %+v, %v", got, err)
	}
	// Her old ids are free again.
	if got, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.carl.ID, core.AgentChange{SlackUser: ptr("U0ALICE")}); err != nil || got.SlackUser != "U0ALICE" {
		t.Fatalf("carl takes the freed id: %+v, %v", got, err)
	}

	// Linked at creation; a taken or malformed id creates nobody.
	_, err = a.svc.CreateAgent(ctx, a.admin.ID, core.Agent{Email: "dora@example.com", Name: "Dora", SlackUser: "U0ALICE"}, "long-enough")
	isErr(t, "create with carl's slack", err, core.ErrConflict)
	_, err = a.svc.CreateAgent(ctx, a.admin.ID, core.Agent{Email: "dora@example.com", Name: "Dora", WeComUserID: "dora!"}, "long-enough")
	isErr(t, "create with a bad wecom id", err, core.ErrInvalid)
	if _, err := a.store.AgentByEmail(ctx, "dora@example.com"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("a refused agent was created: %v", err)
	}
	dora, err := a.svc.CreateAgent(ctx, a.admin.ID, core.Agent{Email: "dora@example.com", Name: "Dora", WeComUserID: "dora", SlackUser: "W0DORA"}, "long-enough")
	if err != nil || dora.WeComUserID != "dora" || dora.SlackUser != "W0DORA" {
		t.Fatalf("create dora linked: %+v, %v", dora, err)
	}
}

// TestEnsureAgentsLeavesExistingLinks: the config's agents are created
// with their links on the first start; later, links the config gives an
// existing agent are not applied (the API owns agents after the first
// start), and a link another agent has by then is left off a new agent.
func TestEnsureAgentsLeavesExistingLinks(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()
	if _, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.carl.ID, core.AgentChange{WeComUserID: ptr("carl")}); err != nil {
		t.Fatal(err)
	}
	created, err := a.svc.EnsureAgents(ctx, []core.AgentSeed{
		{Email: "alice@example.com", Name: "Alice", Password: "password-alice", WeComUserID: "alice", SlackUser: "U0ALICE"},
		{Email: "erin@example.com", Name: "Erin", Password: "password-erin", WeComUserID: "CARL", SlackUser: "U0ERIN"},
	})
	if err != nil || len(created) != 1 {
		t.Fatalf("created %+v, %v", created, err)
	}
	if cur, _ := a.store.Agent(ctx, a.alice.ID); cur.WeComUserID != "" || cur.SlackUser != "" {
		t.Errorf("existing alice got the config's links: %+v", cur)
	}
	if erin := created[0]; erin.WeComUserID != "" || erin.SlackUser != "U0ERIN" {
		t.Errorf("erin: %+v, want carl's wecom id left off and her slack id kept", erin)
	}
}

// An agent of the config without a name is named after their email, not
// shown to customers with none.
func TestEnsureAgentsNamesAnAgentWithoutOne(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	created, err := a.svc.EnsureAgents(context.Background(), []core.AgentSeed{{Email: "Frank.Li@example.com", Name: "  ", Password: "password-frank"}})
	if err != nil || len(created) != 1 || created[0].Name != "Frank.Li" {
		t.Fatalf("created %+v, %v; want one agent named Frank.Li", created, err)
	}
}

func TestDeactivateRequeuesAndRevokes(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()
	// Carl is at his console and takes a conversation.
	releaseCarl := a.presence.Connect(a.carl.ID)
	defer releaseCarl()
	in, err := a.svc.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v1",
		Message: core.Message{Kind: core.KindText, Text: "hello"}})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := a.store.Conversation(ctx, in.Conversation.ID); c.AssigneeID != a.carl.ID {
		t.Fatalf("conversation not routed to carl: %+v", c)
	}
	a.session(t, a.carl.ID, "carl-1")
	a.session(t, a.alice.ID, "alice-1")
	releaseAlice := a.presence.Connect(a.alice.ID)
	defer releaseAlice()

	got, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.carl.ID, core.AgentChange{Active: ptr(false), Name: ptr("Carl (left)")})
	if err != nil || got.Active || got.Name != "Carl (left)" {
		t.Fatalf("deactivate: %+v, %v", got, err)
	}
	stored, _ := a.store.Agent(ctx, a.carl.ID)
	if stored.Active || stored.Name != "Carl (left)" {
		t.Fatalf("stored %+v", stored)
	}
	// Carl's console is still connected, but the conversation goes to Alice.
	if c, _ := a.store.Conversation(ctx, in.Conversation.ID); c.AssigneeID != a.alice.ID || c.Status != core.StatusOpen {
		t.Fatalf("conversation after deactivation: %+v, want it with alice", c)
	}
	if a.hasSession("carl-1") || !a.hasSession("alice-1") {
		t.Fatal("deactivation must revoke carl's sessions and only his")
	}
	// Reactivated, he is routed to again.
	if _, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.carl.ID, core.AgentChange{Active: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if avail, _ := a.presence.Available(ctx); len(avail) != 2 {
		t.Fatalf("available after reactivation = %v, want alice and carl", avail)
	}
}

func TestPasswords(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()
	a.session(t, a.alice.ID, "alice-1")
	a.session(t, a.alice.ID, "alice-2")
	a.session(t, a.carl.ID, "carl-1")

	isErr(t, "wrong current", a.svc.ChangePassword(ctx, a.alice.ID, "nope", "new-password-1"), core.ErrForbidden)
	isErr(t, "too short", a.svc.ChangePassword(ctx, a.alice.ID, "password-alice", "short"), core.ErrInvalid)
	if !a.hasSession("alice-1") {
		t.Fatal("a refused change revoked sessions")
	}
	if err := a.svc.ChangePassword(ctx, a.alice.ID, "password-alice", "new-password-1"); err != nil {
		t.Fatal(err)
	}
	if stored, _ := a.store.Agent(ctx, a.alice.ID); !stored.CheckPassword("new-password-1") || stored.Name != "Alice" {
		t.Fatalf("after change: %+v", stored)
	}
	if a.hasSession("alice-1") || a.hasSession("alice-2") || !a.hasSession("carl-1") {
		t.Fatal("a password change revokes the agent's sessions, and only theirs")
	}

	isErr(t, "reset by an agent", a.svc.ResetPassword(ctx, a.alice.ID, a.carl.ID, "new-password-2"), core.ErrForbidden)
	isErr(t, "reset a missing agent", a.svc.ResetPassword(ctx, a.admin.ID, 999, "new-password-2"), core.ErrNotFound)
	if err := a.svc.ResetPassword(ctx, a.admin.ID, a.carl.ID, "new-password-2"); err != nil {
		t.Fatal(err)
	}
	if stored, _ := a.store.Agent(ctx, a.carl.ID); !stored.CheckPassword("new-password-2") {
		t.Fatal("reset did not set the password")
	}
	if a.hasSession("carl-1") {
		t.Fatal("a reset revokes the agent's sessions")
	}
}

// racingStore is a Store whose next Agents call runs before once it has read
// the agents: what another node changes between this node's check of a link
// and its write.
type racingStore struct {
	core.Store
	before func()
}

func (r *racingStore) Agents(ctx context.Context) ([]core.Agent, error) {
	all, err := r.Store.Agents(ctx)
	if f := r.before; f != nil {
		r.before = nil
		f()
	}
	return all, err
}

// TestLinkTakenThroughAnotherNode: two nodes give one id to two agents at
// the same moment. Each node's check passes; the store refuses the second
// write, which changes nothing, and the admin hears whose id it is. A
// config agent is then created without the link.
func TestLinkTakenThroughAnotherNode(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()
	rs := &racingStore{Store: a.store}
	node2 := core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8},
		core.Deps{Store: rs, Presence: core.NewMemoryPresence(), Notifier: nopNotifier{}})
	linkCarl := func(ch core.AgentChange) func() {
		return func() {
			if _, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.carl.ID, ch); err != nil {
				t.Fatalf("node 1 links carl: %v", err)
			}
		}
	}
	namesCarl := func(name string, err error) {
		t.Helper()
		isErr(t, name, err, core.ErrConflict)
		if err == nil || !strings.Contains(err.Error(), "Carl") {
			t.Errorf("%s: %v does not say the id is carl's", name, err)
		}
	}

	rs.before = linkCarl(core.AgentChange{WeComUserID: ptr("dora")})
	_, err := node2.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{WeComUserID: ptr("DORA"), Name: ptr("Alice L.")})
	namesCarl("alice linked to carl's new wecom id", err)
	if cur, _ := a.store.Agent(ctx, a.alice.ID); cur.WeComUserID != "" || cur.Name != "Alice" {
		t.Errorf("a refused change was applied: %+v", cur)
	}

	rs.before = linkCarl(core.AgentChange{SlackUser: ptr("U0ERIN")})
	_, err = node2.CreateAgent(ctx, a.admin.ID, core.Agent{Email: "erin@example.com", Name: "Erin", SlackUser: "U0ERIN"}, "long-enough")
	namesCarl("erin created with carl's new slack id", err)
	if _, err := a.store.AgentByEmail(ctx, "erin@example.com"); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("a refused agent was created: %v", err)
	}

	rs.before = linkCarl(core.AgentChange{WeComUserID: ptr("frank")})
	created, err := node2.EnsureAgents(ctx, []core.AgentSeed{
		{Email: "frank@example.com", Name: "Frank", Password: "password-frank", WeComUserID: "Frank", SlackUser: "U0FRANK"},
	})
	if err != nil || len(created) != 1 || created[0].WeComUserID != "" || created[0].SlackUser != "U0FRANK" {
		t.Fatalf("config agent: %+v, %v; want frank created without carl's wecom id", created, err)
	}
	if cur, _ := a.store.Agent(ctx, a.carl.ID); cur.WeComUserID != "frank" || cur.SlackUser != "U0ERIN" {
		t.Errorf("carl: %+v", cur)
	}
}

// TestLastAdminThroughAnotherNode: node 2 deactivates the root admin while
// node 1 demotes the only other admin. Node 2's check passes; the store
// refuses its write, and nothing of the deactivation stays behind: the
// root is still an active admin, on and not away, on node 2 and as a
// restart would find them.
func TestLastAdminThroughAnotherNode(t *testing.T) {
	t.Parallel()
	a := newAccounts(t)
	ctx := context.Background()
	if _, err := a.svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{Role: ptr(core.RoleAdmin)}); err != nil {
		t.Fatal(err)
	}
	cfg := core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8}
	rs := &racingStore{Store: a.store}
	p2 := core.NewMemoryPresence()
	node2 := core.NewService(cfg, core.Deps{Store: rs, Presence: p2, Notifier: nopNotifier{}})
	if err := node2.SetOn(ctx, a.admin.ID, true); err != nil {
		t.Fatal(err)
	}
	rs.before = func() {
		if _, err := a.svc.UpdateAgent(ctx, a.alice.ID, a.alice.ID, core.AgentChange{Role: ptr(core.RoleAgent)}); err != nil {
			t.Fatalf("node 1: alice steps down: %v", err)
		}
	}
	_, err := node2.UpdateAgent(ctx, a.alice.ID, a.admin.ID, core.AgentChange{Active: ptr(false)})
	isErr(t, "deactivating the last active admin", err, core.ErrConflict)

	if cur, err := a.store.Agent(ctx, a.admin.ID); err != nil || !cur.Active || cur.Role != core.RoleAdmin {
		t.Fatalf("root after the refusal: %+v, %v", cur, err)
	}
	if avail, _ := p2.Available(ctx); len(avail) != 1 || avail[0] != a.admin.ID {
		t.Errorf("node 2 routes to %v after the refusal, want root", avail)
	}
	p3 := core.NewMemoryPresence()
	restarted := core.NewService(cfg, core.Deps{Store: a.store, Presence: p3, Notifier: nopNotifier{}})
	if err := restarted.RestorePresence(ctx); err != nil {
		t.Fatal(err)
	}
	if avail, _ := p3.Available(ctx); len(avail) != 1 || avail[0] != a.admin.ID {
		t.Errorf("after a restart, routing goes to %v, want root", avail)
	}
}

// interleave is a store on which, once armed, the next update of agent id
// runs then (another node's change) first: the change lands between this
// node's read and its write.
type interleave struct {
	core.Store
	id   int64
	then func()
}

func (s *interleave) UpdateAgent(ctx context.Context, prev, next core.Agent) error {
	if next.ID == s.id && s.then != nil {
		then := s.then
		s.then = nil
		then()
	}
	return s.Store.UpdateAgent(ctx, prev, next)
}

// Two nodes change one agent at once: neither change undoes the other.
// A deactivation does not bring an old password back, and a password reset
// does not bring a deactivated agent back.
func TestAgentChangesOnTwoNodesKeepEachOther(t *testing.T) {
	ctx := context.Background()
	for _, resetFirst := range []bool{false, true} {
		a := newAccounts(t) // node 1: a.svc, on the store itself
		st := &interleave{Store: a.store, id: a.alice.ID}
		node2 := core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8},
			core.Deps{Store: st, Presence: core.NewMemoryPresence(), Notifier: nopNotifier{}})
		deactivate := func(svc *core.Service) func() {
			return func() {
				if _, err := svc.UpdateAgent(ctx, a.admin.ID, a.alice.ID, core.AgentChange{Active: ptr(false)}); err != nil {
					t.Error(err)
				}
			}
		}
		reset := func(svc *core.Service) func() {
			return func() {
				if err := svc.ResetPassword(ctx, a.admin.ID, a.alice.ID, "a-new-long-password"); err != nil {
					t.Error(err)
				}
			}
		}
		if resetFirst { // node 1 resets while node 2 deactivates
			st.then = reset(a.svc)
			deactivate(node2)()
		} else { // node 1 deactivates while node 2 resets
			st.then = deactivate(a.svc)
			reset(node2)()
		}
		if st.then != nil {
			t.Fatal("test set-up: the other node's change did not run")
		}
		got, err := a.store.Agent(ctx, a.alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Active {
			t.Errorf("reset first %v: alice is active again after her deactivation", resetFirst)
		}
		if !got.CheckPassword("a-new-long-password") || got.CheckPassword("password-alice") {
			t.Errorf("reset first %v: the password reset was undone", resetFirst)
		}
	}
}

// An agent changes their password with their current one on one node while
// an admin resets it on another (the account was taken over, say): the
// change, checked against the password the reset replaced, is refused, and
// the reset stands.
func TestChangePasswordDoesNotUndoAReset(t *testing.T) {
	ctx := context.Background()
	a := newAccounts(t)
	st := &interleave{Store: a.store, id: a.alice.ID}
	node2 := core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8},
		core.Deps{Store: st, Presence: core.NewMemoryPresence(), Notifier: nopNotifier{}})
	st.then = func() {
		if err := a.svc.ResetPassword(ctx, a.admin.ID, a.alice.ID, "the-admins-reset-password"); err != nil {
			t.Error(err)
		}
	}
	err := node2.ChangePassword(ctx, a.alice.ID, "password-alice", "another-long-password")
	if st.then != nil {
		t.Fatal("test set-up: the reset did not run")
	}
	isErr(t, "a change over a reset", err, core.ErrConflict)
	if got, _ := a.store.Agent(ctx, a.alice.ID); !got.CheckPassword("the-admins-reset-password") {
		t.Error("the change undid the admin's reset")
	}
}
