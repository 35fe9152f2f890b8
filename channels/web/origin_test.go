package web

import "testing"

// kefu's own pages are allowed by the host the request came to, or by
// server.public_url behind a proxy that passes on another Host.
func TestOwnOrigin(t *testing.T) {
	for _, c := range []struct {
		origin, host, public string
		want                 bool
	}{
		{"http://localhost:8080", "localhost:8080", "", true},
		{"https://help.example.com", "127.0.0.1:8080", "https://help.example.com", true},
		{"https://help.example.com", "127.0.0.1:8080", "https://help.example.com/kefu/", true},
		{"http://help.example.com", "127.0.0.1:8080", "https://help.example.com", false}, // another scheme
		{"https://evil.example.com", "127.0.0.1:8080", "https://help.example.com", false},
		{"https://evil.example.com", "127.0.0.1:8080", "", false},
		{"null", "127.0.0.1:8080", "", false},
	} {
		if got := ownOrigin(c.origin, c.host, c.public); got != c.want {
			t.Errorf("ownOrigin(%q, %q, %q) = %v, want %v", c.origin, c.host, c.public, got, c.want)
		}
	}
}

// A device names a topic some pusher pushes: with several pushers (one per
// app) every device must name its app; a visitor's may name only this
// deployment's apps; an agent's any app while one pusher serves them all.
func TestCheckTopic(t *testing.T) {
	one, two := []string{"com.shop.app"}, []string{"com.shop.agents", "com.shop.app"}
	for _, c := range []struct {
		topic   string
		topics  []string
		visitor bool
		ok      bool
	}{
		{"", nil, true, true},
		{"", one, true, true},
		{"com.shop.app", one, true, true},
		{"com.other.app", one, true, false},
		{"com.shop.app", nil, true, false},
		{"com.shop.agents", one, false, true}, // one key serves the team's apps
		{"", two, true, false},
		{"", two, false, false},
		{"com.shop.agents", two, false, true},
		{"com.shop.app", two, true, true},
		{"com.other.app", two, false, false},
	} {
		if err := checkTopic(c.topic, c.topics, c.visitor); (err == nil) != c.ok {
			t.Errorf("checkTopic(%q, %v, visitor %v) = %v, want ok %v", c.topic, c.topics, c.visitor, err, c.ok)
		}
	}
}
