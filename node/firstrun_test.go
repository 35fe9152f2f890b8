package node_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/node"
	"github.com/kefuhq/kefu/node/nodetest"
)

// On a fresh store with no configured agents, the first start creates one
// admin with a random password, once; the password is never logged.
func TestEnsureFirstAdmin(t *testing.T) {
	n := nodetest.Start(t, `routing: {offline_reply: ""}`)
	ctx := context.Background()
	email, password, err := n.EnsureFirstAdmin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if email != node.FirstAdminEmail || len(password) < 20 {
		t.Fatalf("first admin %q with a password of %d characters", email, len(password))
	}
	a := n.Agent(t, node.FirstAdminEmail)
	if a.Role != core.RoleAdmin || !a.Active || !a.CheckPassword(password) || strings.Contains(a.PasswordHash, password) {
		t.Fatalf("first admin %+v", a)
	}
	// Once: the next start (or call) finds an agent and does nothing.
	if e, p, err := n.EnsureFirstAdmin(ctx); e != "" || p != "" || err != nil {
		t.Fatalf("second call: %q %q %v", e, p, err)
	}
	all, err := n.Service().Store().Agents(ctx)
	if err != nil || len(all) != 1 {
		t.Fatalf("%d agents, %v", len(all), err)
	}
	if u := n.BaseURL(); !strings.HasPrefix(u, "http://localhost:") || !strings.HasSuffix(n.URL, u[len("http://localhost"):]) {
		t.Errorf("URL %q for a node at %s", u, n.URL)
	}
}

// Configured agents are the first accounts: no admin is made up.
func TestNoFirstAdminWithConfiguredAgents(t *testing.T) {
	n := nodetest.Start(t, `
server: {public_url: "https://support.example.com/"}
agents:
  - {email: alice@example.com, name: Alice, role: admin, password: alice-password}
`)
	if e, p, err := n.EnsureFirstAdmin(context.Background()); e != "" || p != "" || err != nil {
		t.Fatalf("with configured agents: %q %q %v", e, p, err)
	}
	if _, err := n.Service().Store().AgentByEmail(context.Background(), node.FirstAdminEmail); err == nil {
		t.Fatal("an admin was created despite the configured agents")
	}
	if u := n.BaseURL(); u != "https://support.example.com" {
		t.Errorf("URL %q, want the public URL", u)
	}
}

// Configured agents without an admin among them, and none in the store:
// the admin is made up all the same, or nobody could manage the agents.
func TestFirstAdminWhenNoConfiguredAgentIsAdmin(t *testing.T) {
	n := nodetest.Start(t, `
agents:
  - {email: alice@example.com, name: Alice, role: agent, password: alice-password}
`)
	email, password, err := n.EnsureFirstAdmin(context.Background())
	if err != nil || email != node.FirstAdminEmail || password == "" {
		t.Fatalf("EnsureFirstAdmin = %q %q %v, want the admin", email, password, err)
	}
	if a := n.Agent(t, node.FirstAdminEmail); a.Role != core.RoleAdmin || !a.Active {
		t.Fatalf("%+v, want an active admin", a)
	}
	if e, p, err := n.EnsureFirstAdmin(context.Background()); e != "" || p != "" || err != nil {
		t.Fatalf("again: %q %q %v, want nothing", e, p, err)
	}
}
