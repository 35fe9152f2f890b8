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
	"syscall"
	"time"

	"github.com/kefuhq/kefu/channels/web/webtest"
)

// sessions starts visitor sessions (POST /api/v1/visitor/session) over
// kept-alive HTTP/1.1 connections of its own, one request at a time on
// each, without net/http's client. Its transport runs two goroutines per
// connection and hands every request and response between them and the
// caller: in a profile of the handshake scenario that was about a quarter
// of the client's CPU per handshake (BENCHMARKS.md, "Day"), taken from the
// server under test on a machine they share. The request is the one
// webtest's client sends (its User-Agent aside, and no Accept-Encoding:
// kefu does not compress). Safe for concurrent use.
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
// requests, as the net/http transport's MaxIdleConnsPerHost did; a
// connection beyond it is closed after its request.
const maxIdleSessionConns = 1024

// newSessions returns sessions for the server at base (http://host[:port]
// with an optional path prefix), or nil for one it does not speak to
// (https, or a URL with user info or a query): the client then starts
// sessions through net/http.
func newSessions(c *client, base string) *sessions {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	body := "{}"
	req := "POST " + strings.TrimSuffix(u.EscapedPath(), "/") + "/api/v1/visitor/session HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"User-Agent: kefu-bench\r\n" +
		"Content-Type: application/json\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
	return &sessions{c: c, addr: addr, req: []byte(req), idle: make(chan *sessionConn, maxIdleSessionConns)}
}

// start starts one anonymous visitor session and returns its token. A kept
// connection the server closed while it was idle (the request could not be
// written, or the connection ended before any answer) is dropped and the
// request made once more on a new one. (A server that closed it after
// making the session would then make a second one: harmless in a load
// test, and kefu answers every request it reads.) A timeout is not tried
// again.
func (s *sessions) start(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var sc *sessionConn
	select {
	case sc = <-s.idle:
	default:
	}
	if sc != nil && sc.br.Buffered() > 0 { // bytes nobody asked for: not to be trusted
		s.done(sc, false)
		sc = nil
	}
	if sc != nil {
		tok, keep, err := sc.do(ctx, s.req)
		if err == nil || !errors.Is(err, errClosedIdle) || ctx.Err() != nil {
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

// errClosedIdle is a request whose connection was closed by the server
// before it answered: on a kept connection, most likely while it was idle.
var errClosedIdle = errors.New("connection closed before an answer")

// closedIdle tells a connection the server closed (an end of file, a
// reset, a broken pipe) from other failures, a timeout among them.
func closedIdle(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %v", errClosedIdle, err)
	}
	return err
}

// sessionTimeout bounds one session request, as the net/http client's
// timeout does for the bench's other requests. A variable for tests.
var sessionTimeout = 60 * time.Second

// maxSessionAnswer bounds the body of a session request's answer.
const maxSessionAnswer = 1 << 20

// do sends req and reads the answer: the session's token, and whether the
// connection may serve another request. It gives up when ctx ends.
func (sc *sessionConn) do(ctx context.Context, req []byte) (tok string, keep bool, err error) {
	dl := time.Now().Add(sessionTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = sc.cn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = sc.cn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() || ctx.Err() != nil {
			keep = false
			if err != nil {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
		}
	}()
	if _, err := sc.cn.Write(req); err != nil {
		return "", false, closedIdle(err)
	}
	if _, err := sc.br.Peek(1); err != nil {
		return "", false, closedIdle(err)
	}
	var resp *http.Response
	for informational := 0; ; informational++ {
		if resp, err = http.ReadResponse(sc.br, nil); err != nil {
			return "", false, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx (a proxy's 103 Early Hints): the answer follows, as net/http
		// reads up to 5 of them.
		if informational == 4 {
			return "", false, errors.New("too many 1xx answers")
		}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSessionAnswer+1))
	if err != nil {
		return "", false, err
	}
	if len(data) > maxSessionAnswer {
		// Not closing the body, which would read the rest: the connection goes.
		return "", false, fmt.Errorf("session answer over %d bytes", maxSessionAnswer)
	}
	resp.Body.Close()
	keep = !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if resp.StatusCode/100 != 2 {
		return "", keep, webtest.ResponseError(resp, data)
	}
	var s struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &s); err != nil || s.Token == "" {
		return "", keep, fmt.Errorf("no token in %q", data)
	}
	return s.Token, keep, nil
}
