package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// sessions starts visitor sessions (POST /api/v1/visitor/session) over
// kept-alive HTTP/1.1 connections of its own, one request at a time on
// each, without net/http's client. Its transport runs two goroutines per
// connection and hands every request and response between them and the
// caller: in a profile of the handshake scenario that was a quarter of
// the client's CPU per handshake (BENCHMARKS.md), taken from the server
// under test on a machine they share. The server sees the same request.
type sessions struct {
	c    *client
	addr string // host:port to dial
	req  []byte // the whole request
	idle chan *sessionConn
}

// sessionConn is one kept-alive connection of sessions.
type sessionConn struct {
	cn net.Conn
	br *bufio.Reader
}

// maxIdleSessionConns bounds the connections sessions keeps between
// requests; a connection beyond it is closed after its request.
const maxIdleSessionConns = 256

// newSessions returns sessions for the server at base (http://host[:port]
// with an optional path prefix), or nil for one it does not speak to
// (https): the client then starts sessions through net/http.
func newSessions(c *client, base string) *sessions {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	body := "{}"
	req := "POST " + strings.TrimSuffix(u.Path, "/") + "/api/v1/visitor/session HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"User-Agent: kefu-bench\r\n" +
		"Content-Type: application/json\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	return &sessions{c: c, addr: addr, req: []byte(req), idle: make(chan *sessionConn, maxIdleSessionConns)}
}

// start starts one anonymous visitor session and returns its token. A kept
// connection that fails before an answer (the server closed it while it
// was idle) is dropped and the request made once more on a new one.
func (s *sessions) start(ctx context.Context) (string, error) {
	var sc *sessionConn
	select {
	case sc = <-s.idle:
	default:
	}
	if sc != nil {
		tok, keep, err := sc.do(ctx, s.req)
		if err == nil || !errors.Is(err, errNoAnswer) {
			s.done(sc, keep)
			return tok, err
		}
		s.done(sc, false)
	}
	cn, err := s.c.netDial(ctx, "tcp", s.addr)
	if err != nil {
		return "", err
	}
	sc = &sessionConn{cn: cn, br: bufio.NewReaderSize(cn, 1024)}
	tok, keep, err := sc.do(ctx, s.req)
	s.done(sc, keep)
	return tok, err
}

// done keeps sc for the next request, or closes it.
func (s *sessions) done(sc *sessionConn, keep bool) {
	if keep {
		select {
		case s.idle <- sc:
			return
		default:
		}
	}
	sc.cn.Close()
}

// close closes the connections kept.
func (s *sessions) close() {
	for {
		select {
		case sc := <-s.idle:
			sc.cn.Close()
		default:
			return
		}
	}
}

// errNoAnswer is a request whose connection ended before any answer.
var errNoAnswer = errors.New("connection closed before an answer")

// sessionTimeout bounds one session request, as the net/http client's
// timeout does for the bench's other requests.
const sessionTimeout = 60 * time.Second

// maxSessionAnswer bounds the body of a session request's answer.
const maxSessionAnswer = 1 << 20

// do sends req and reads the answer: the session's token, and whether the
// connection may serve another request.
func (sc *sessionConn) do(ctx context.Context, req []byte) (tok string, keep bool, err error) {
	dl := time.Now().Add(sessionTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = sc.cn.SetDeadline(dl)
	if _, err := sc.cn.Write(req); err != nil {
		return "", false, fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	if _, err := sc.br.Peek(1); err != nil {
		return "", false, fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	resp, err := http.ReadResponse(sc.br, nil)
	if err != nil {
		return "", false, err
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSessionAnswer+1))
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if len(data) > maxSessionAnswer {
		return "", false, fmt.Errorf("session answer over %d bytes", maxSessionAnswer)
	}
	keep = !resp.Close
	if resp.StatusCode/100 != 2 {
		return "", keep, fmt.Errorf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var s struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &s); err != nil || s.Token == "" {
		return "", keep, fmt.Errorf("no token in %q", data)
	}
	return s.Token, keep, nil
}
