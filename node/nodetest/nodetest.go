// Package nodetest runs a real kefu node in-process for end-to-end tests:
// parsed from YAML like an operator's config, listening on a loopback port,
// with its store and media under the test's temporary directory, and
// stopped (and checked for a clean stop) when the test ends.
package nodetest

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/node"
)

// Node is a running test node.
type Node struct {
	*node.Node
	// URL is the node's base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Dir is the temporary directory holding its store and media.
	Dir string
	// Config is the config it runs with.
	Config *config.Config
}

// Start parses yaml (with an empty environment), points the store and the
// media folder at a temporary directory unless the YAML sets them, quiets
// the log unless the YAML sets a level, starts the node and waits until
// /readyz answers 200.
func Start(t testing.TB, yaml string) *Node {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	def := config.Default()
	dir := t.TempDir()
	if cfg.Store.Driver == "sqlite" && cfg.Store.DSN == def.Store.DSN {
		cfg.Store.DSN = filepath.Join(dir, "kefu.db")
	}
	if cfg.Media.Dir == def.Media.Dir {
		cfg.Media.Dir = filepath.Join(dir, "media")
	}
	if cfg.Log.Level == def.Log.Level {
		cfg.Log.Level = "error"
	}
	return StartConfig(t, cfg, dir)
}

// StartConfig starts a node with cfg as it is. dir is reported as Node.Dir.
func StartConfig(t testing.TB, cfg *config.Config, dir string) *Node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln})
	if err != nil {
		cancel()
		t.Fatalf("node.New: %v", err)
	}
	tn := &Node{Node: n, URL: "http://" + ln.Addr().String(), Dir: dir, Config: cfg}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("node did not stop within 30 s")
		}
	})
	WaitFor(t, "the node to be ready", func() bool {
		resp, err := http.Get(tn.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return tn
}

// Agent returns the stored agent with this email.
func (n *Node) Agent(t testing.TB, email string) core.Agent {
	t.Helper()
	a, err := n.Service().Store().AgentByEmail(context.Background(), email)
	if err != nil {
		t.Fatalf("agent %s: %v", email, err)
	}
	return a
}

// Messages returns a conversation's messages (agents' view), oldest first.
func (n *Node) Messages(t testing.TB, convID int64) []core.Message {
	t.Helper()
	ms, err := n.Service().Store().Messages(context.Background(), core.MessageQuery{ConversationID: convID, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// WaitFor is wait.For: it polls cond until it holds, failing the test
// after 15 s. It is for waiting on asynchronous effects, never for
// measuring time.
var WaitFor = wait.For
