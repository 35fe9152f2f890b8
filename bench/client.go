package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/kefuhq/kefu/channels/web/webtest"
)

// client reaches one server (kefu or the reference) through the protocol of
// docs/protocol.md: logins and long polling through webtest, sessions over
// kept connections of its own (sessions; webtest for https), and its own
// lean WebSocket connections for the hot loop.
type client struct {
	base   string
	wc     *webtest.Client
	srcs   []net.IP // source addresses to spread WebSockets over (nil: any)
	next   atomic.Uint64
	dialer websocket.Dialer
	sess   *sessions // nil: sessions start through wc
}

func newClient(base string, srcs, offset int) *client {
	c := &client{base: base}
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second}
	c.wc = &webtest.Client{Base: base, HTTP: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
	if u, err := url.Parse(base); err == nil && srcs > 1 {
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() && ip.To4() != nil {
			for i := 0; i < srcs; i++ {
				c.srcs = append(c.srcs, net.IPv4(127, 0, 0, byte(1+(offset+i)%254)))
			}
		}
	}
	c.dialer = websocket.Dialer{HandshakeTimeout: 15 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024,
		NetDialContext: c.netDial}
	c.sess = newSessions(c, base)
	return c
}

func (c *client) netDial(ctx context.Context, network, addr string) (net.Conn, error) {
	// No TCP keep-alive: a bench connection is short, or kept alive by
	// the protocol's pings. Its socket options cost four system calls per
	// dial, client CPU taken from the server under test on a shared
	// machine (1-3 % of the client's CPU per handshake, BENCHMARKS.md).
	d := net.Dialer{Timeout: 15 * time.Second, KeepAlive: -1}
	if len(c.srcs) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: c.srcs[c.next.Add(1)%uint64(len(c.srcs))]}
	}
	return d.DialContext(ctx, network, addr)
}

// session starts a new anonymous visitor session and returns its token.
func (c *client) session(ctx context.Context) (string, error) {
	if c.sess != nil {
		return c.sess.start(ctx)
	}
	s, err := c.wc.StartSession(ctx, webtest.SessionRequest{})
	if err != nil {
		return "", err
	}
	return s.Token, nil
}

// login logs an agent in (POST /api/v1/auth/login) and returns its token.
func (c *client) login(ctx context.Context, email, password string) (string, error) {
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/v1/auth/login", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.wc.HTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login %s: HTTP %d %s", email, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var a struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &a); err != nil || a.Token == "" {
		return "", fmt.Errorf("login %s: no token in %s", email, data)
	}
	return a.Token, nil
}

// wsConn is a lean protocol connection: a reused read buffer, frames
// recognised by scanning bytes, no per-frame allocation.
type wsConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
	buf []byte
}

var (
	pongFrame   = []byte(`{"type":"pong"}`)
	typePing    = []byte(`"type":"ping"`)
	typeSynced  = []byte(`"type":"synced"`)
	typeWelcome = []byte(`"type":"welcome"`)
	typeError   = []byte(`"type":"error"`)
)

// dial opens /ws/visitor or /ws/agent, says hello with token and waits for
// synced (the replay, if any, is skipped).
func (c *client) dial(ctx context.Context, path, token string) (*wsConn, error) {
	cn, _, err := c.dialSynced(ctx, path, map[string]any{"type": "hello", "token": token}, nil)
	return cn, err
}

// agentHello is an agent's hello with its cursor (cursor < 0: none, from
// now on).
func agentHello(token string, cursor int64) map[string]any {
	hello := map[string]any{"type": "hello", "token": token}
	if cursor >= 0 {
		hello["cursor"] = cursor
	}
	return hello
}

// dialSynced is dial with the given hello, also returning the synced
// frame's agent cursor, or its visitor last_seq (-1 if it has neither). replay, if not nil, is given
// every other frame before synced (the replay of what follows the cursor);
// each is valid only during the call.
func (c *client) dialSynced(ctx context.Context, path string, hello map[string]any, replay func([]byte)) (*wsConn, int64, error) {
	u := "ws" + strings.TrimPrefix(c.base, "http") + path
	ws, resp, err := c.dialer.DialContext(ctx, u, nil)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			return nil, -1, fmt.Errorf("handshake: HTTP %d", resp.StatusCode)
		}
		return nil, -1, err
	}
	cn := &wsConn{ws: ws}
	helloB, _ := json.Marshal(hello)
	if err := cn.write(helloB); err != nil {
		ws.Close()
		return nil, -1, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	welcomed := false
	for {
		f, err := cn.read()
		if err != nil {
			ws.Close()
			return nil, -1, err
		}
		switch {
		case bytes.Contains(f, typeWelcome):
			welcomed = true
		case bytes.Contains(f, typeError):
			ws.Close()
			return nil, -1, fmt.Errorf("hello refused: %s", f)
		case bytes.Contains(f, typeSynced) && welcomed:
			_ = ws.SetReadDeadline(time.Time{})
			cur, ok := intField(f, cursorKey)
			if !ok {
				cur, ok = intField(f, lastSeqKey)
			}
			if !ok {
				cur = -1
			}
			return cn, cur, nil
		case bytes.Contains(f, typePing):
			_ = cn.write(pongFrame)
		case welcomed && replay != nil:
			replay(f)
		}
	}
}

// read returns the next text frame, valid until the next read.
func (cn *wsConn) read() ([]byte, error) {
	_, r, err := cn.ws.NextReader()
	if err != nil {
		return nil, err
	}
	b := cn.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if cap(b) <= 64<<10 {
		cn.buf = b
	}
	return b, nil
}

func (cn *wsConn) write(b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.ws.SetWriteDeadline(time.Now().Add(15 * time.Second))
	return cn.ws.WriteMessage(websocket.TextMessage, b)
}

func (cn *wsConn) close() { _ = cn.ws.Close() }

// hold answers pings until the connection ends.
func (cn *wsConn) hold() {
	for {
		f, err := cn.read()
		if err != nil {
			return
		}
		if bytes.Contains(f, typePing) {
			_ = cn.write(pongFrame)
		}
		if cap(cn.buf) > 4096 {
			cn.buf = nil // an idle connection keeps only a small buffer
		}
	}
}

// openVisitor starts a session and connects a visitor WebSocket.
func (c *client) openVisitor(ctx context.Context) (*wsConn, error) {
	tok, err := c.session(ctx)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	return c.dial(ctx, "/ws/visitor", tok)
}

// returningVisitor starts a visitor session and a conversation, and
// returns its token and conversation. Its hello for a reconnect comes from
// resumeHello once the conversation has settled.
func (c *client) returningVisitor(ctx context.Context, id int) (token string, conv int64, err error) {
	tok, err := c.session(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("session: %w", err)
	}
	cn, err := c.dial(ctx, "/ws/visitor", tok)
	if err != nil {
		return "", 0, err
	}
	defer cn.close()
	conv, _, err = cn.startConversation(id)
	return tok, conv, err
}

// resumeHello resumes conversation conv once, taking what was missed, and
// returns the hello the widget sends when it reconnects: its token,
// conversation and the last seq synced (so that a reconnect with it has
// nothing to replay or query, whatever followed the visitor's own message:
// an offline reply, an assignment, a note).
func (c *client) resumeHello(ctx context.Context, tok string, conv int64) (map[string]any, error) {
	hello := map[string]any{"type": "hello", "token": tok, "conversation_id": conv, "last_seq": 0}
	cn, last, err := c.dialSynced(ctx, "/ws/visitor", hello, nil)
	if err != nil {
		return nil, err
	}
	cn.close()
	if last < 0 {
		return nil, errors.New("synced without last_seq")
	}
	hello["last_seq"] = last
	return hello, nil
}

// startConversation sends a first message (not one the throughput
// scenarios count) and waits for its ack: the visitor's conversation is
// open when it returns, with the message's seq. Nothing else may read cn
// meanwhile.
func (cn *wsConn) startConversation(id int) (conv, seq int64, err error) {
	if err := cn.write(fmt.Appendf(nil, `{"type":"send","id":"w%d","text":"warm-up"}`, id)); err != nil {
		return 0, 0, err
	}
	_ = cn.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer cn.ws.SetReadDeadline(time.Time{})
	for {
		f, err := cn.read()
		if err != nil {
			return 0, 0, err
		}
		switch {
		case bytes.Contains(f, typeAck):
			conv, ok1 := intField(f, convKey)
			seq, ok2 := intField(f, seqKey)
			if !ok1 || !ok2 {
				return 0, 0, fmt.Errorf("ack without conversation_id and seq: %s", f)
			}
			return conv, seq, nil
		case bytes.Contains(f, typeError):
			return 0, 0, fmt.Errorf("send refused: %s", f)
		case bytes.Contains(f, typePing):
			_ = cn.write(pongFrame)
		}
	}
}

// errString shortens an error for counting by kind.
func errString(err error) string {
	var he *webtest.HTTPError
	if errors.As(err, &he) {
		return fmt.Sprintf("HTTP %d %s", he.Status, he.Err.Code)
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s)-i < 60 {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// errCounts counts errors by kind.
type errCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errCounts) add(err error) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	e.m[errString(err)]++
	e.mu.Unlock()
}

func (e *errCounts) snapshot() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

var (
	cursorKey  = []byte(`"cursor":`)
	lastSeqKey = []byte(`"last_seq":`)
	convKey    = []byte(`"conversation_id":`)
	seqKey     = []byte(`"seq":`)
)

// intField parses the non-negative integer following key in f.
func intField(f, key []byte) (int64, bool) {
	i := bytes.Index(f, key)
	if i < 0 {
		return 0, false
	}
	return parseDigits(f[i+len(key):])
}

func parseDigits(b []byte) (int64, bool) {
	var v int64
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
		n++
	}
	return v, n > 0 && n < 19
}
