package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sessionServer answers POST {prefix}/api/v1/visitor/session as answer
// says, and counts the connections it accepted.
type sessionServer struct {
	*httptest.Server
	conns  atomic.Int64
	mu     sync.Mutex
	seen   []string // method, path, content type and body of each request
	answer func(w http.ResponseWriter, n int)
}

func newSessionServer(t *testing.T, prefix string, answer func(w http.ResponseWriter, n int)) *sessionServer {
	s := &sessionServer{answer: answer}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, r.Host+" "+r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+string(body))
		n := len(s.seen)
		s.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != prefix+"/api/v1/visitor/session" {
			http.NotFound(w, r)
			return
		}
		s.answer(w, n)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func tokenAnswer(w http.ResponseWriter, n int) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token":"t%d","visitor":{"id":"a:%d"},"conversation":null,"last_seq":0}`, n, n)
}

// Sessions start over one kept connection, with the request net/http's
// client would make, under the base URL's path.
func TestSessionsKeepTheConnection(t *testing.T) {
	srv := newSessionServer(t, "/support", tokenAnswer)
	c := newClient(srv.URL+"/support/", 1, 0)
	if c.sess == nil {
		t.Fatal("no lean sessions for an http URL")
	}
	for i := 1; i <= 3; i++ {
		tok, err := c.session(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("t%d", i); tok != want {
			t.Errorf("session %d: token %q, want %q", i, tok, want)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("3 sessions took %d connections, want 1", n)
	}
	want := strings.TrimPrefix(srv.URL, "http://") + " POST /support/api/v1/visitor/session application/json {}"
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, got := range srv.seen {
		if got != want {
			t.Errorf("request %q, want %q", got, want)
		}
	}
}

// A kept connection the server closed while it was idle is replaced: the
// session still starts.
func TestSessionsAfterTheServerClosedTheConnection(t *testing.T) {
	srv := newSessionServer(t, "", tokenAnswer)
	c := newClient(srv.URL, 1, 0)
	if _, err := c.session(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	tok, err := c.session(context.Background())
	if err != nil {
		t.Fatalf("after the server closed the kept connection: %v", err)
	}
	if tok != "t2" {
		t.Errorf("token %q, want t2", tok)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A refusal, an answer without a token and one the server closes are
// errors that name what went wrong; the connection is kept only when the
// answer left it usable.
func TestSessionsBadAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, n int)
		err    string
		conns  int64 // after two requests: 1 if the answer leaves the connection usable
	}{
		{"refused", func(w http.ResponseWriter, _ int) {
			w.Header().Set("Retry-After", "3")
			http.Error(w, `{"error":{"code":"rate_limited"}}`, http.StatusTooManyRequests)
		}, "HTTP 429", 1},
		{"no token", func(w http.ResponseWriter, _ int) { fmt.Fprint(w, `{"visitor":{}}`) }, "no token", 1},
		{"not JSON", func(w http.ResponseWriter, _ int) { fmt.Fprint(w, `<html>`) }, "no token", 1},
		{"closing", func(w http.ResponseWriter, _ int) {
			w.Header().Set("Connection", "close")
			http.Error(w, "bye", http.StatusServiceUnavailable)
		}, "HTTP 503", 2},
		{"refused, JSON", func(w http.ResponseWriter, _ int) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
		}, "HTTP 429 rate_limited", 1},
		{"too long", func(w http.ResponseWriter, _ int) {
			fmt.Fprintf(w, `{"token":"%s"}`, strings.Repeat("x", maxSessionAnswer))
		}, "over", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newSessionServer(t, "", tc.answer)
			c := newClient(srv.URL, 1, 0)
			for range 2 {
				tok, err := c.session(context.Background())
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					msg := fmt.Sprint(err)
					if len(msg) > 200 {
						msg = msg[:200] + "…"
					}
					t.Fatalf("a token of %d bytes, error %s, want one with %q", len(tok), msg, tc.err)
				}
			}
			if n := srv.conns.Load(); n != tc.conns {
				t.Errorf("%d connections, want %d", n, tc.conns)
			}
			want := 0
			if tc.conns == 1 {
				want = 1
			}
			if kept := len(c.sess.idle); kept != want {
				t.Errorf("%d connections kept, want %d", kept, want)
			}
		})
	}
}

// A server that cannot be reached is an error, not a hang or a panic.
func TestSessionsNoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient("http://"+addr, 1, 0)
	if _, err := c.session(context.Background()); err == nil {
		t.Fatal("a session from a closed port")
	}
}

// An https server gets its sessions through net/http.
func TestSessionsHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokenAnswer(w, 1)
	}))
	defer srv.Close()
	c := newClient(srv.URL, 1, 0)
	if c.sess != nil {
		t.Fatal("lean sessions for an https URL")
	}
	c.wc.HTTP = srv.Client()
	tok, err := c.session(context.Background())
	if err != nil || tok != "t1" {
		t.Fatalf("token %q, error %v", tok, err)
	}
}

// A chunked answer, and one that a 103 Early Hints precedes, are read
// whole, and the connection serves the next request.
func TestSessionsAnswerForms(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, n int)
	}{
		{"chunked", func(w http.ResponseWriter, n int) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token":"t%d",`, n)
			w.(http.Flusher).Flush() // no Content-Length: chunked
			fmt.Fprint(w, `"visitor":{}}`)
		}},
		{"early hints", func(w http.ResponseWriter, n int) {
			w.Header().Set("Link", "</widget.js>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			tokenAnswer(w, n)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newSessionServer(t, "", tc.answer)
			c := newClient(srv.URL, 1, 0)
			for i := 1; i <= 2; i++ {
				tok, err := c.session(context.Background())
				if err != nil || tok != fmt.Sprint("t", i) {
					t.Fatalf("session %d: token %q, error %v", i, tok, err)
				}
			}
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// stallSecond returns a server that answers the first session request and
// holds the second one until the test ends (arrived is closed when it
// comes), and a client that has made the first.
func stallSecond(t *testing.T) (*sessionServer, *client, <-chan struct{}) {
	t.Helper()
	arrived, unblock := make(chan struct{}), make(chan struct{})
	srv := newSessionServer(t, "", func(w http.ResponseWriter, n int) {
		if n == 2 {
			close(arrived)
			<-unblock
		}
		tokenAnswer(w, n)
	})
	t.Cleanup(func() { close(unblock) }) // before the server's Close, registered earlier, waits for it
	c := newClient(srv.URL, 1, 0)
	if _, err := c.session(context.Background()); err != nil {
		t.Fatal(err)
	}
	return srv, c, arrived
}

// A request in flight ends when its context does, with the context's
// error, and its connection is not kept.
func TestSessionsContext(t *testing.T) {
	_, c, arrived := stallSecond(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := c.session(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if kept := len(c.sess.idle); kept != 0 {
		t.Errorf("%d connections kept after a cancelled request", kept)
	}
}

// A request that times out is not made again: a slow server is not sent
// more load. A switch of protocols leaves the connection unusable.
func TestSessionsNoRetry(t *testing.T) {
	srv, c, _ := stallSecond(t)
	defer func(d time.Duration) { sessionTimeout = d }(sessionTimeout)
	sessionTimeout = 200 * time.Millisecond // the second request is never answered
	var ne net.Error
	if _, err := c.session(context.Background()); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v, want a timeout", err)
	}
	srv.mu.Lock()
	n := len(srv.seen)
	srv.mu.Unlock()
	if n != 2 {
		t.Errorf("the server saw %d requests, want 2", n)
	}
	if kept := len(c.sess.idle); kept != 0 {
		t.Errorf("%d connections kept after a timeout", kept)
	}

	// A context already ended sends nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.session(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	srv.mu.Lock()
	n = len(srv.seen)
	srv.mu.Unlock()
	if n != 2 {
		t.Errorf("the server saw %d requests after an ended context, want 2", n)
	}
}

// A 101 answer leaves nothing to reuse.
func TestSessionsSwitchingProtocols(t *testing.T) {
	srv := newSessionServer(t, "", func(w http.ResponseWriter, _ int) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		w.WriteHeader(http.StatusSwitchingProtocols)
	})
	c := newClient(srv.URL, 1, 0)
	if _, err := c.session(context.Background()); err == nil {
		t.Fatal("a session from a 101 answer")
	}
	if kept := len(c.sess.idle); kept != 0 {
		t.Errorf("%d connections kept after a 101", kept)
	}
}
