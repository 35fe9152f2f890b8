package web_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/node/nodetest"
)

// TestVisitorLimitsCountAnIPv6Slash64: one host commonly holds a whole
// IPv6 /64; the visitor limits count the /64, as the login throttle does,
// or a client would start conversations without end by changing address.
func TestVisitorLimitsCountAnIPv6Slash64(t *testing.T) {
	n := nodetest.Start(t, fmt.Sprintf(`
server: {addr: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"]}
channels:
  web:
    type: %s
    enabled: true
    limits: {requests_per_minute: 1000, messages_per_minute: 30, conversations_per_hour: 2}
`, web.RealtimeTestType))
	base := n.URL
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
