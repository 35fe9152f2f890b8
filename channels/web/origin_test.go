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
