package web_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/node"
)

// TestVisitorLimitsCountAnIPv6Slash64: one host commonly holds a whole
// IPv6 /64; the visitor limits count the /64, as the login throttle does,
// or a client would start conversations without end by changing address.
func TestVisitorLimitsCountAnIPv6Slash64(t *testing.T) {
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"]}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
channels:
  web:
    type: %s
    enabled: true
    limits: {requests_per_minute: 1000, messages_per_minute: 30, conversations_per_hour: 2}
`, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), web.RealtimeTestType)
	cfg, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + ln.Addr().String()
	wait.For(t, "the node", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	session := func(from string) int {
		req, err := http.NewRequest(http.MethodPost, base+"/api/v1/visitor/session", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", from)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, want := range []int{200, 200, 429} {
		if got := session(fmt.Sprintf("2001:db8:1:2::%x", i+1)); got != want {
			t.Errorf("new visitor %d from the /64: HTTP %d, want %d", i+1, got, want)
		}
	}
	if got := session("2001:db8:1:3::1"); got != 200 {
		t.Errorf("a new visitor from another /64: HTTP %d, want 200", got)
	}
}
