// Package slacktest is a fake Slack for tests of the slack channel, in
// Slack's documented wire formats.
//
// The Web API side answers POST {URL}/api/{method} (form-encoded, or JSON
// with a bearer token) with {"ok":true,…} or {"ok":false,"error":…}, and a
// rate limit as HTTP 429 with Retry-After in seconds. It implements
// auth.test, chat.postMessage, chat.postEphemeral, chat.update,
// conversations.history (with message metadata) and apps.connections.open,
// records every call with the time it arrived, and fails on demand.
//
// The Socket Mode side is a WebSocket at the URL apps.connections.open
// hands out: it says hello, pushes the envelopes a test gives it and
// records the acknowledgements.
//
// The Events API side is a signer: Sign and PostEvent sign and post event
// payloads the way Slack does (X-Slack-Signature, v0 HMAC-SHA256 over
// "v0:{timestamp}:{body}"), and Message builds a message event.
package slacktest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Identities of the fake workspace and of the bot the token belongs to.
const (
	TeamID    = "T0KEFU"
	BotUserID = "U0KEFUBOT"
	BotID     = "B0KEFUBOT"
)

// Call is one Web API request the server received.
type Call struct {
	Method   string // "chat.postMessage", …
	Channel  string
	ThreadTS string // thread_ts
	TS       string // the ts of the message created or updated (chat.*)
	User     string // chat.postEphemeral: who sees it
	Text     string
	Metadata string // the metadata field, as sent (JSON)
	Form     url.Values
	At       time.Time // when it arrived
	// Status is the HTTP status answered; Error the "error" of an ok:false
	// answer. A call succeeded when Status is 200 and Error is empty.
	Status int
	Error  string
}

// OK reports whether the call succeeded.
func (c Call) OK() bool { return c.Status == http.StatusOK && c.Error == "" }

// Failure is an answer to force on a call.
type Failure struct {
	// Status is the HTTP status (429, 500…); 0 means 200 with Error.
	Status int
	// RetryAfter is the Retry-After header, in seconds, sent with 429.
	RetryAfter int
	// Error is the "error" of an ok:false answer (with Status 0 or 200),
	// e.g. "not_in_channel", "msg_too_long".
	Error string
}

// Message is a message in the fake channel history.
type Message struct {
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	BotID    string
	User     string
	Metadata json.RawMessage
}

// Server is a fake Slack. Its zero value is not usable; call New.
type Server struct {
	*httptest.Server
	botToken, appToken string

	mu       sync.Mutex
	clock    int64 // last ts handed out, in microseconds
	calls    []Call
	failures map[string][]Failure
	history  []Message // successful posts, oldest first
	deleted  map[string]bool
	arrived  chan struct{}

	// Socket Mode.
	envelopes chan []byte
	acks      []string
	sockets   int
	upgrader  websocket.Upgrader
}

// New starts a fake Slack accepting botToken for the Web API and appToken
// for apps.connections.open.
func New(botToken, appToken string) *Server {
	s := &Server{
		botToken:  botToken,
		appToken:  appToken,
		failures:  map[string][]Failure{},
		deleted:   map[string]bool{},
		arrived:   make(chan struct{}, 1),
		envelopes: make(chan []byte, 256),
		// slack-go dials with Origin: https://api.slack.com, which Slack accepts.
		upgrader: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", s.serveAPI)
	mux.HandleFunc("/socket", s.serveSocket)
	s.Server = httptest.NewServer(mux)
	return s
}

// APIURL is the api_base to configure: the Web API root, with its trailing slash.
func (s *Server) APIURL() string { return s.URL + "/api/" }

// FailNext makes the next len(fs) calls of method answer fs, in order.
func (s *Server) FailNext(method string, fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[method] = append(s.failures[method], fs...)
}

// Delete removes a message from the channel, as a person deleting it in
// Slack would: replies to it are then posted un-threaded.
func (s *Server) Delete(ts string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[ts] = true
}

// AddHistory puts a message into the channel history directly (a message
// kefu posted before it crashed, say), and returns its ts.
func (s *Server) AddHistory(m Message) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.TS == "" {
		m.TS = s.nextTS()
	}
	s.history = append(s.history, m)
	return m.TS
}

// Calls returns the calls of method so far ("" for all), in arrival order.
func (s *Server) Calls(method string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Posts returns the successful chat.postMessage calls: what is in the
// channel, in order.
func (s *Server) Posts() []Call {
	var out []Call
	for _, c := range s.Calls("chat.postMessage") {
		if c.OK() {
			out = append(out, c)
		}
	}
	return out
}

// Parents returns the successful top-level posts (no thread_ts).
func (s *Server) Parents() []Call {
	var out []Call
	for _, c := range s.Posts() {
		if c.ThreadTS == "" {
			out = append(out, c)
		}
	}
	return out
}

// Thread returns the successful posts into the thread of parent ts.
func (s *Server) Thread(ts string) []Call {
	var out []Call
	for _, c := range s.Posts() {
		if c.ThreadTS == ts {
			out = append(out, c)
		}
	}
	return out
}

// Ephemerals returns the successful chat.postEphemeral calls.
func (s *Server) Ephemerals() []Call {
	var out []Call
	for _, c := range s.Calls("chat.postEphemeral") {
		if c.OK() {
			out = append(out, c)
		}
	}
	return out
}

// Wait polls until cond holds for the calls so far or timeout passes, and
// returns the calls of method then.
func (s *Server) Wait(method string, timeout time.Duration, cond func([]Call) bool) []Call {
	deadline := time.After(timeout)
	for {
		calls := s.Calls(method)
		if cond(calls) {
			return calls
		}
		select {
		case <-s.arrived:
		case <-deadline:
			return s.Calls(method)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitPosts waits until at least n messages were posted successfully and
// returns them.
func (s *Server) WaitPosts(n int, timeout time.Duration) []Call {
	s.Wait("chat.postMessage", timeout, func([]Call) bool { return len(s.Posts()) >= n })
	return s.Posts()
}

// WaitEphemerals waits until at least n ephemeral messages were posted.
func (s *Server) WaitEphemerals(n int, timeout time.Duration) []Call {
	s.Wait("chat.postEphemeral", timeout, func([]Call) bool { return len(s.Ephemerals()) >= n })
	return s.Ephemerals()
}

// nextTS returns a new message ts: "seconds.microseconds", increasing.
// Callers hold s.mu.
func (s *Server) nextTS() string {
	now := time.Now().UnixMicro()
	if now <= s.clock {
		now = s.clock + 1
	}
	s.clock = now
	return fmt.Sprintf("%d.%06d", now/1e6, now%1e6)
}

func (s *Server) poke() {
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	c := Call{Method: method, At: time.Now()}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		c.Form, _ = url.ParseQuery(string(body))
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		c.Form = url.Values{}
	}
	for k, v := range r.URL.Query() {
		c.Form[k] = append(c.Form[k], v...)
	}
	if t := c.Form.Get("token"); t != "" {
		token = t
	}
	c.Channel, c.ThreadTS, c.User = c.Form.Get("channel"), c.Form.Get("thread_ts"), c.Form.Get("user")
	c.Text, c.Metadata = c.Form.Get("text"), c.Form.Get("metadata")

	s.mu.Lock()
	defer func() {
		s.calls = append(s.calls, c)
		s.mu.Unlock()
		s.poke()
	}()
	want := s.botToken
	if method == "apps.connections.open" {
		want = s.appToken
	}
	if token == "" || token != want {
		c.Status, c.Error = http.StatusOK, "invalid_auth"
		writeJSON(w, c.Status, map[string]any{"ok": false, "error": c.Error})
		return
	}
	if fs := s.failures[method]; len(fs) > 0 {
		f := fs[0]
		s.failures[method] = fs[1:]
		c.Status, c.Error = f.Status, f.Error
		if c.Status == 0 {
			c.Status = http.StatusOK
		}
		switch {
		case c.Status == http.StatusTooManyRequests:
			w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
			c.Error = "ratelimited"
			writeJSON(w, c.Status, map[string]any{"ok": false, "error": c.Error})
		case c.Status >= 500:
			http.Error(w, "<html>upstream error</html>", c.Status)
		default:
			if c.Error == "" {
				c.Error = "fatal_error"
			}
			writeJSON(w, c.Status, map[string]any{"ok": false, "error": c.Error})
		}
		return
	}
	c.Status = http.StatusOK
	answer, errCode := s.handle(&c)
	if errCode != "" {
		c.Error = errCode
		writeJSON(w, c.Status, map[string]any{"ok": false, "error": errCode})
		return
	}
	answer["ok"] = true
	writeJSON(w, c.Status, answer)
}

// handle answers a call that passed auth and forced failures. Callers
// hold s.mu.
func (s *Server) handle(c *Call) (map[string]any, string) {
	switch c.Method {
	case "auth.test":
		return map[string]any{"url": "https://kefu-test.slack.com/", "team": "kefu-test", "user": "kefu",
			"team_id": TeamID, "user_id": BotUserID, "bot_id": BotID}, ""
	case "apps.connections.open":
		return map[string]any{"url": "ws" + strings.TrimPrefix(s.URL, "http") + "/socket"}, ""
	case "chat.postMessage":
		if c.Channel == "" {
			return nil, "channel_not_found"
		}
		if strings.TrimSpace(c.Text) == "" {
			return nil, "no_text"
		}
		c.TS = s.nextTS()
		threaded := c.ThreadTS
		if s.deleted[threaded] {
			threaded = "" // the parent is gone: Slack posts the reply on its own
		}
		m := Message{Channel: c.Channel, TS: c.TS, ThreadTS: threaded, Text: c.Text, BotID: BotID, User: BotUserID}
		if c.Metadata != "" {
			m.Metadata = json.RawMessage(c.Metadata)
		}
		s.history = append(s.history, m)
		msg := map[string]any{"type": "message", "text": c.Text, "ts": c.TS, "bot_id": BotID, "user": BotUserID}
		if threaded != "" {
			msg["thread_ts"] = threaded
		}
		return map[string]any{"channel": c.Channel, "ts": c.TS, "message": msg}, ""
	case "chat.postEphemeral":
		if c.Channel == "" || c.User == "" {
			return nil, "user_not_in_channel"
		}
		c.TS = s.nextTS()
		return map[string]any{"message_ts": c.TS}, ""
	case "chat.update":
		c.TS = c.Form.Get("ts")
		for i, m := range s.history {
			if m.TS == c.TS && m.Channel == c.Channel && !s.deleted[m.TS] {
				s.history[i].Text = c.Text
				return map[string]any{"channel": c.Channel, "ts": c.TS, "text": c.Text}, ""
			}
		}
		return nil, "message_not_found"
	case "conversations.history":
		return s.historyPage(c)
	}
	return nil, "unknown_method"
}

// historyPage answers conversations.history: the channel's top-level
// messages newer than oldest, newest first, limit at a time.
func (s *Server) historyPage(c *Call) (map[string]any, string) {
	oldest, _ := strconv.ParseFloat(c.Form.Get("oldest"), 64)
	limit, _ := strconv.Atoi(c.Form.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	start, _ := strconv.Atoi(c.Form.Get("cursor"))
	withMeta := c.Form.Get("include_all_metadata") == "1" || c.Form.Get("include_all_metadata") == "true"
	var ms []Message
	for _, m := range s.history {
		ts, _ := strconv.ParseFloat(m.TS, 64)
		if m.Channel == c.Channel && m.ThreadTS == "" && ts > oldest && !s.deleted[m.TS] {
			ms = append(ms, m)
		}
	}
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].TS > ms[j].TS })
	if start > len(ms) {
		start = len(ms)
	}
	page := ms[start:]
	more := len(page) > limit
	if more {
		page = page[:limit]
	}
	out := make([]map[string]any, 0, len(page))
	for _, m := range page {
		o := map[string]any{"type": "message", "ts": m.TS, "text": m.Text}
		if m.BotID != "" {
			o["bot_id"] = m.BotID
		}
		if m.User != "" {
			o["user"] = m.User
		}
		if withMeta && len(m.Metadata) > 0 {
			o["metadata"] = m.Metadata
		}
		out = append(out, o)
	}
	ans := map[string]any{"messages": out, "has_more": more}
	if more {
		ans["response_metadata"] = map[string]any{"next_cursor": strconv.Itoa(start + limit)}
	}
	return ans, ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// --- Socket Mode.

// serveSocket is the Socket Mode WebSocket: hello, then the queued
// envelopes; acknowledgements are recorded. Slack pings the client, so do
// we.
func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	s.mu.Lock()
	s.sockets++
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var ack struct {
				EnvelopeID string `json:"envelope_id"`
			}
			if err := conn.ReadJSON(&ack); err != nil {
				return
			}
			s.mu.Lock()
			s.acks = append(s.acks, ack.EnvelopeID)
			s.mu.Unlock()
			s.poke()
		}
	}()
	if err := conn.WriteJSON(map[string]any{"type": "hello", "num_connections": 1,
		"connection_info": map[string]any{"app_id": "A0KEFU"}}); err != nil {
		return
	}
	ping := time.NewTicker(time.Second)
	defer ping.Stop()
	for {
		select {
		case <-done:
			return
		case env := <-s.envelopes:
			if err := conn.WriteMessage(websocket.TextMessage, env); err != nil {
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(time.Second)); err != nil {
				return
			}
		}
	}
}

// Sockets reports how many Socket Mode connections were opened.
func (s *Server) Sockets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sockets
}

// SendEnvelope queues an events_api envelope carrying payload (an
// event_callback, as the Events API would post it) for the Socket Mode
// client, and returns its envelope_id.
func (s *Server) SendEnvelope(payload []byte, retryAttempt int) string {
	s.mu.Lock()
	id := "env-" + s.nextTS()
	s.mu.Unlock()
	env, err := json.Marshal(map[string]any{
		"type": "events_api", "envelope_id": id, "payload": json.RawMessage(payload),
		"accepts_response_payload": false, "retry_attempt": retryAttempt, "retry_reason": "",
	})
	if err != nil {
		panic("slacktest: " + err.Error())
	}
	s.envelopes <- env
	return id
}

// SendRaw queues a raw Socket Mode frame.
func (s *Server) SendRaw(frame []byte) { s.envelopes <- frame }

// Acks returns the envelope ids acknowledged so far.
func (s *Server) Acks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.acks...)
}

// WaitAck waits until envelope id is acknowledged; it reports whether it was.
func (s *Server) WaitAck(id string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		for _, a := range s.Acks() {
			if a == id {
				return true
			}
		}
		select {
		case <-s.arrived:
		case <-deadline:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// --- Events API.

// Event is a message event as the Events API delivers it, to build
// payloads with Payload.
type Event struct {
	EventID  string // default: a new one
	Channel  string
	User     string
	Text     string
	TS       string // default: now
	ThreadTS string
	BotID    string
	SubType  string
}

var evSeq struct {
	sync.Mutex
	n int
}

// Payload returns the event_callback body of a message event.
func (e Event) Payload() []byte {
	evSeq.Lock()
	evSeq.n++
	n := evSeq.n
	evSeq.Unlock()
	if e.EventID == "" {
		e.EventID = fmt.Sprintf("Ev%08d", n)
	}
	if e.TS == "" {
		e.TS = fmt.Sprintf("%d.%06d", time.Now().Unix(), n%1e6)
	}
	inner := map[string]any{"type": "message", "channel": e.Channel, "text": e.Text, "ts": e.TS,
		"event_ts": e.TS, "channel_type": "channel"}
	if e.User != "" {
		inner["user"] = e.User
	}
	if e.ThreadTS != "" {
		inner["thread_ts"] = e.ThreadTS
	}
	if e.BotID != "" {
		inner["bot_id"] = e.BotID
	}
	if e.SubType != "" {
		inner["subtype"] = e.SubType
	}
	body, err := json.Marshal(map[string]any{
		"token": "deprecated-verification-token", "team_id": TeamID, "api_app_id": "A0KEFU",
		"type": "event_callback", "event_id": e.EventID, "event_time": time.Now().Unix(), "event": inner,
	})
	if err != nil {
		panic("slacktest: " + err.Error())
	}
	return body
}

// URLVerification returns the body Slack posts when a Request URL is saved.
func URLVerification(challenge string) []byte {
	body, _ := json.Marshal(map[string]string{"token": "deprecated-verification-token", "challenge": challenge, "type": "url_verification"})
	return body
}

// Sign sets X-Slack-Request-Timestamp and X-Slack-Signature for body as
// Slack does: "v0=" + hex HMAC-SHA256(secret, "v0:{timestamp}:{body}").
func Sign(secret string, h http.Header, body []byte, at time.Time) {
	ts := strconv.FormatInt(at.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "v0:%s:", ts)
	m.Write(body)
	h.Set("X-Slack-Request-Timestamp", ts)
	h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(m.Sum(nil)))
}

// PostEvent signs body with secret (timestamped at) and posts it to url,
// an Events API Request URL. retry > 0 sets X-Slack-Retry-Num (and
// X-Slack-Retry-Reason), as Slack's retries do.
func PostEvent(client *http.Client, url, secret string, body []byte, at time.Time, retry int) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
	if retry > 0 {
		req.Header.Set("X-Slack-Retry-Num", strconv.Itoa(retry))
		req.Header.Set("X-Slack-Retry-Reason", "http_timeout")
	}
	Sign(secret, req.Header, body, at)
	return client.Do(req)
}
