// Package telegramtest is a fake Telegram Bot API server for tests, in the
// documented wire format: requests to /bot{token}/{method} as multipart
// forms (or URL-encoded forms, or JSON), answers
// {"ok":true,"result":…} or {"ok":false,"error_code":…,"description":…,
// "parameters":{…}} with the error code as HTTP status, and file downloads
// at /file/bot{token}/{file_path}.
//
// It keeps a queue of updates that getUpdates hands out with the Bot API's
// long-poll semantics (an update is dropped once getUpdates is called with
// an offset above its update_id; a second poller cuts the first off with
// 409), keeps the webhook setting (getUpdates is refused while one is set),
// serves files for getFile, and answers sendMessage, sendPhoto and
// sendDocument. It records every call and fails on demand: a rate limit
// with retry_after, a 5xx, a slow answer, a chat that blocked the bot, a
// chat that migrated, a chat that is gone.
package telegramtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-telegram/bot/models"
)

// BotID is the fake bot's user id.
const BotID = 777000

// Call is one request the server received.
type Call struct {
	Method string
	Fields map[string]string // form fields (JSON values as their JSON text)
	Files  map[string]Upload // uploaded files by field name
	At     time.Time         // when it arrived
	// Answered is false while the server is still working on the call (a
	// long poll waiting, a slow answer).
	Answered bool
	// ErrorCode is what the server answered: 0 for ok, else the
	// error_code (and HTTP status).
	ErrorCode int
	// MessageID is the id of the message a successful send* created.
	MessageID int
	// ChatID is the call's chat_id, when it has one.
	ChatID int64
	// Updates are the update_ids a getUpdates call handed out.
	Updates []int64
}

// OK reports whether the call was answered with success.
func (c Call) OK() bool { return c.Answered && c.ErrorCode == 0 }

// Upload is a file part of a request.
type Upload struct {
	Name string
	Data []byte
}

// Failure is an answer to force on a call.
type Failure struct {
	// Code is the error_code and HTTP status (429, 500, 403, 400…); 0
	// answers normally (after Delay).
	Code        int
	Description string // default: the status text
	RetryAfter  int    // parameters.retry_after (with 429)
	MigrateTo   int64  // parameters.migrate_to_chat_id (with 400)
	// Delay holds the answer this long (a slow API), or until the client
	// gives up.
	Delay time.Duration
	// Body, when set, is sent as is instead of a JSON answer (a proxy's
	// HTML error page).
	Body string
}

// WebhookInfo is the webhook as set with setWebhook.
type WebhookInfo struct {
	URL            string
	SecretToken    string
	AllowedUpdates []string
}

type file struct {
	path string
	data []byte
}

type update struct {
	id  int64
	raw json.RawMessage
}

// Server is a fake Bot API. Its zero value is not usable; call New.
type Server struct {
	*httptest.Server
	token string

	mu         sync.Mutex
	updates    []update // not confirmed yet, by id
	nextUpdate int64
	nextMsgIn  map[int64]int // per chat, for messages customers send
	nextMsgOut map[int64]int // per chat, for messages the bot sends
	pollGen    int           // bumped by every getUpdates: an older one waiting is cut off
	wake       chan struct{} // closed when updates arrive or a poll starts
	webhook    WebhookInfo
	files      map[string]file // by file_id
	calls      []Call
	failures   map[string][]Failure
	blocked    map[int64]bool
	gone       map[int64]bool
	migrated   map[int64]int64
	arrived    chan struct{}
}

// New starts a fake Bot API for the bot with token.
func New(token string) *Server {
	s := &Server{
		token:      token,
		nextUpdate: 100000,
		nextMsgIn:  map[int64]int{},
		nextMsgOut: map[int64]int{},
		wake:       make(chan struct{}),
		files:      map[string]file{},
		failures:   map[string][]Failure{},
		blocked:    map[int64]bool{},
		gone:       map[int64]bool{},
		migrated:   map[int64]int64{},
		arrived:    make(chan struct{}, 1),
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Token is the bot token the server accepts.
func (s *Server) Token() string { return s.token }

// --- Building and feeding updates.

// Private returns a message from a customer in a private chat: chat id and
// user id chatID, named first last (@username). Fill in its content.
func Private(chatID int64, first, last, username string) *models.Message {
	return &models.Message{
		Date: int(time.Now().Unix()),
		Chat: models.Chat{ID: chatID, Type: models.ChatTypePrivate, FirstName: first, LastName: last, Username: username},
		From: &models.User{ID: chatID, FirstName: first, LastName: last, Username: username, LanguageCode: "en"},
	}
}

// Text returns a private text message from chatID (named "Zhang San").
func Text(chatID int64, text string) *models.Message {
	m := Private(chatID, "Zhang", "San", "zhangsan")
	m.Text = text
	return m
}

// Update wraps m in an update. With id 0, the server numbers it when it is
// added or posted.
func Update(m *models.Message) models.Update { return models.Update{Message: m} }

// number gives u an update_id and its message a message_id when they have
// none, and encodes it.
func (s *Server) number(u *models.Update) json.RawMessage {
	s.mu.Lock()
	if u.ID == 0 {
		s.nextUpdate++
		u.ID = s.nextUpdate
	} else if u.ID > s.nextUpdate {
		s.nextUpdate = u.ID
	}
	if m := u.Message; m != nil && m.ID == 0 {
		s.nextMsgIn[m.Chat.ID]++
		m.ID = s.nextMsgIn[m.Chat.ID]
	}
	s.mu.Unlock()
	raw, err := json.Marshal(u)
	if err != nil {
		panic("telegramtest: cannot encode update: " + err.Error())
	}
	return raw
}

// AddUpdate queues an update for getUpdates and returns its update_id.
func (s *Server) AddUpdate(u models.Update) int64 {
	return s.AddRawUpdate(u.ID, s.number(&u))
}

// AddRawUpdate queues an update given as JSON (which should carry id as
// its update_id) and returns id.
func (s *Server) AddRawUpdate(id int64, raw json.RawMessage) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates = append(s.updates, update{id: id, raw: raw})
	sort.SliceStable(s.updates, func(i, j int) bool { return s.updates[i].id < s.updates[j].id })
	s.wakeLocked()
	return id
}

// Post delivers u to a webhook url the way Telegram does (a JSON POST with
// the secret in X-Telegram-Bot-Api-Secret-Token; an empty secret sends no
// header) and returns the HTTP status and the numbered update.
func (s *Server) Post(url, secret string, u models.Update) (int, models.Update, error) {
	raw := s.number(&u)
	code, err := PostRaw(url, secret, raw)
	return code, u, err
}

// PostRaw posts body to a webhook url as Telegram would and returns the
// HTTP status.
func PostRaw(url, secret string, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Pending returns the update_ids not confirmed yet.
func (s *Server) Pending() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int64, len(s.updates))
	for i, u := range s.updates {
		ids[i] = u.id
	}
	return ids
}

// AddFile makes data downloadable under path and returns its file_id.
func (s *Server) AddFile(path string, data []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("file-%d", len(s.files)+1)
	s.files[id] = file{path: path, data: data}
	return id
}

// --- Failure knobs.

// FailNext makes the next len(fs) calls of method answer fs, in order.
func (s *Server) FailNext(method string, fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[method] = append(s.failures[method], fs...)
}

// Block makes chatID a user who blocked the bot: sends to it get 403.
func (s *Server) Block(chatID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocked[chatID] = true
}

// Forget makes chatID unknown: sends to it get 400 "chat not found".
func (s *Server) Forget(chatID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone[chatID] = true
}

// Migrate makes chatID a chat that moved to newID: sends to it get 400
// with migrate_to_chat_id.
func (s *Server) Migrate(chatID, newID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.migrated[chatID] = newID
}

// --- What happened.

// Webhook returns the webhook as set.
func (s *Server) Webhook() WebhookInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhook
}

// SetWebhookURL sets the webhook as if setWebhook had been called.
func (s *Server) SetWebhookURL(url, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webhook = WebhookInfo{URL: url, SecretToken: secret}
}

// Calls returns the calls of method so far ("" for all), in arrival
// order, including those not answered yet.
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

// Sent returns the successful sendMessage, sendPhoto and sendDocument
// calls, in order.
func (s *Server) Sent() []Call {
	var out []Call
	for _, c := range s.Calls("") {
		if c.OK() && strings.HasPrefix(c.Method, "send") {
			out = append(out, c)
		}
	}
	return out
}

// WaitSent waits until at least n messages were sent, or timeout passes,
// and returns what was sent.
func (s *Server) WaitSent(n int, timeout time.Duration) []Call {
	return s.waitFor(timeout, func() ([]Call, bool) { got := s.Sent(); return got, len(got) >= n })
}

// WaitCalls waits until at least n calls of method were answered, or
// timeout passes, and returns its calls.
func (s *Server) WaitCalls(method string, n int, timeout time.Duration) []Call {
	return s.waitFor(timeout, func() ([]Call, bool) {
		got := s.Calls(method)
		answered := 0
		for _, c := range got {
			if c.Answered {
				answered++
			}
		}
		return got, answered >= n
	})
}

// WaitArrived waits until method was called at least n times, answered or
// not, or timeout passes, and returns its calls.
func (s *Server) WaitArrived(method string, n int, timeout time.Duration) []Call {
	return s.waitFor(timeout, func() ([]Call, bool) { got := s.Calls(method); return got, len(got) >= n })
}

func (s *Server) waitFor(timeout time.Duration, done func() ([]Call, bool)) []Call {
	deadline := time.After(timeout)
	for {
		if got, ok := done(); ok {
			return got
		}
		select {
		case <-s.arrived:
		case <-deadline:
			got, _ := done()
			return got
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// --- The server.

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/file/bot"); ok {
		s.serveFile(w, rest)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		answerError(w, Failure{Code: http.StatusNotFound, Description: "Not Found"})
		return
	}
	call := Call{Method: method, At: time.Now()}
	fields, files, err := parseRequest(r)
	call.Fields, call.Files = fields, files
	call.ChatID, _ = strconv.ParseInt(fields["chat_id"], 10, 64)
	idx := s.record(call)
	var f Failure
	switch {
	case token != s.token:
		f = Failure{Code: http.StatusUnauthorized, Description: "Unauthorized"}
	case err != nil:
		f = Failure{Code: http.StatusBadRequest, Description: "Bad Request: " + err.Error()}
	default:
		s.mu.Lock()
		if q := s.failures[method]; len(q) > 0 {
			f, s.failures[method] = q[0], q[1:]
		}
		s.mu.Unlock()
	}
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
		}
	}
	if f.Code != 0 {
		call.ErrorCode = f.Code
		s.answered(idx, call)
		answerError(w, f)
		return
	}
	result, f := s.call(r.Context(), &call)
	call.ErrorCode = f.Code
	s.answered(idx, call)
	if f.Code != 0 {
		answerError(w, f)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "result": result})
}

// record notes a call as it arrives and returns its index.
func (s *Server) record(c Call) int {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	i := len(s.calls) - 1
	s.mu.Unlock()
	s.poke()
	return i
}

// answered records how call i was answered.
func (s *Server) answered(i int, c Call) {
	c.Answered = true
	s.mu.Lock()
	s.calls[i] = c
	s.mu.Unlock()
	s.poke()
}

func (s *Server) poke() {
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

// call runs one method and returns its result or the failure to answer.
func (s *Server) call(ctx context.Context, c *Call) (any, Failure) {
	switch c.Method {
	case "getMe":
		return map[string]any{"id": BotID, "is_bot": true, "first_name": "Kefu Test", "username": "kefu_test_bot"}, Failure{}
	case "getUpdates":
		return s.getUpdates(ctx, c)
	case "setWebhook":
		var allowed []string
		if v := c.Fields["allowed_updates"]; v != "" {
			if err := json.Unmarshal([]byte(v), &allowed); err != nil {
				return nil, badRequest("can't parse allowed updates JSON object")
			}
		}
		s.mu.Lock()
		s.webhook = WebhookInfo{URL: c.Fields["url"], SecretToken: c.Fields["secret_token"], AllowedUpdates: allowed}
		s.mu.Unlock()
		return true, Failure{}
	case "deleteWebhook":
		s.mu.Lock()
		s.webhook = WebhookInfo{}
		if c.Fields["drop_pending_updates"] == "true" {
			s.updates = nil
		}
		s.mu.Unlock()
		return true, Failure{}
	case "getWebhookInfo":
		s.mu.Lock()
		defer s.mu.Unlock()
		info := map[string]any{"url": s.webhook.URL, "has_custom_certificate": false, "pending_update_count": len(s.updates)}
		if s.webhook.AllowedUpdates != nil {
			info["allowed_updates"] = s.webhook.AllowedUpdates
		}
		return info, Failure{}
	case "getFile":
		s.mu.Lock()
		f, ok := s.files[c.Fields["file_id"]]
		s.mu.Unlock()
		if !ok {
			return nil, badRequest("invalid file_id")
		}
		return map[string]any{"file_id": c.Fields["file_id"], "file_unique_id": "u" + c.Fields["file_id"],
			"file_size": len(f.data), "file_path": f.path}, Failure{}
	case "sendMessage", "sendPhoto", "sendDocument":
		return s.send(c)
	}
	return nil, Failure{Code: http.StatusNotFound, Description: "Not Found"}
}

// getUpdates answers with the updates at or above offset, waiting up to
// timeout seconds for some to arrive.
func (s *Server) getUpdates(ctx context.Context, c *Call) (any, Failure) {
	offset, _ := strconv.ParseInt(c.Fields["offset"], 10, 64)
	limit, _ := strconv.Atoi(c.Fields["limit"])
	if limit < 1 || limit > 100 {
		limit = 100
	}
	timeout, _ := strconv.Atoi(c.Fields["timeout"])
	deadline := time.Now().Add(time.Duration(timeout) * time.Second)

	s.mu.Lock()
	if s.webhook.URL != "" {
		s.mu.Unlock()
		return nil, Failure{Code: http.StatusConflict,
			Description: "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"}
	}
	s.pollGen++
	gen := s.pollGen
	s.wakeLocked() // cuts off an older poll
	for {
		if gen != s.pollGen {
			s.mu.Unlock()
			return nil, Failure{Code: http.StatusConflict,
				Description: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}
		}
		if offset > 0 {
			i := 0
			for i < len(s.updates) && s.updates[i].id < offset {
				i++
			}
			s.updates = s.updates[i:] // confirmed
		}
		if len(s.updates) > 0 || !time.Now().Before(deadline) {
			n := min(limit, len(s.updates))
			out := make([]json.RawMessage, n)
			c.Updates = make([]int64, n)
			for i := range n {
				out[i], c.Updates[i] = s.updates[i].raw, s.updates[i].id
			}
			s.mu.Unlock()
			return out, Failure{}
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-time.After(time.Until(deadline)):
		case <-ctx.Done():
			return []json.RawMessage{}, Failure{}
		}
		s.mu.Lock()
	}
}

func (s *Server) wakeLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// send answers sendMessage, sendPhoto and sendDocument.
func (s *Server) send(c *Call) (any, Failure) {
	chatID, err := strconv.ParseInt(c.Fields["chat_id"], 10, 64)
	if err != nil {
		return nil, badRequest("chat not found")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.blocked[chatID]:
		return nil, Failure{Code: http.StatusForbidden, Description: "Forbidden: bot was blocked by the user"}
	case s.gone[chatID]:
		return nil, badRequest("chat not found")
	case s.migrated[chatID] != 0:
		return nil, Failure{Code: http.StatusBadRequest, Description: "Bad Request: group chat was upgraded to a supergroup chat",
			MigrateTo: s.migrated[chatID]}
	}
	s.nextMsgOut[chatID]++
	id := 1000000 + s.nextMsgOut[chatID]
	msg := map[string]any{
		"message_id": id,
		"date":       time.Now().Unix(),
		"chat":       map[string]any{"id": chatID, "type": "private"},
		"from":       map[string]any{"id": BotID, "is_bot": true, "first_name": "Kefu Test"},
	}
	if cap := c.Fields["caption"]; cap != "" {
		msg["caption"] = cap
	}
	switch c.Method {
	case "sendMessage":
		if strings.TrimSpace(c.Fields["text"]) == "" {
			return nil, badRequest("message text is empty")
		}
		msg["text"] = c.Fields["text"]
	case "sendPhoto":
		up, ok := c.Files["photo"]
		if !ok && c.Fields["photo"] == "" {
			return nil, badRequest("there is no photo in the request")
		}
		msg["photo"] = []map[string]any{{"file_id": fmt.Sprintf("sent-photo-%d", id), "file_unique_id": "sp", "width": 90, "height": 90, "file_size": len(up.Data)}}
	case "sendDocument":
		up, ok := c.Files["document"]
		if !ok && c.Fields["document"] == "" {
			return nil, badRequest("there is no document in the request")
		}
		msg["document"] = map[string]any{"file_id": fmt.Sprintf("sent-doc-%d", id), "file_unique_id": "sd", "file_name": up.Name, "file_size": len(up.Data)}
	}
	c.MessageID = id
	return msg, Failure{}
}

func (s *Server) serveFile(w http.ResponseWriter, rest string) {
	token, path, ok := strings.Cut(rest, "/")
	if !ok || token != s.token {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	s.mu.Lock()
	var data []byte
	found := false
	for _, f := range s.files {
		if f.path == path {
			data, found = f.data, true
			break
		}
	}
	s.mu.Unlock()
	if !found {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

// parseRequest reads a Bot API request's parameters: a multipart form (as
// the library sends), a URL-encoded form or a JSON object, plus the query.
func parseRequest(r *http.Request) (map[string]string, map[string]Upload, error) {
	fields := map[string]string{}
	files := map[string]Upload{}
	for k, v := range r.URL.Query() {
		fields[k] = v[0]
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "multipart/form-data":
		if err := r.ParseMultipartForm(64 << 20); err != nil {
			return fields, files, fmt.Errorf("bad multipart form: %w", err)
		}
		for k, v := range r.MultipartForm.Value {
			fields[k] = v[0]
		}
		for k, fhs := range r.MultipartForm.File {
			f, err := fhs[0].Open()
			if err != nil {
				return fields, files, err
			}
			data, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				return fields, files, err
			}
			files[k] = Upload{Name: fhs[0].Filename, Data: data}
		}
	case "application/json":
		var obj map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
			return fields, files, fmt.Errorf("bad JSON: %w", err)
		}
		for k, v := range obj {
			var s string
			if json.Unmarshal(v, &s) == nil {
				fields[k] = s
			} else {
				fields[k] = string(v)
			}
		}
	default:
		if err := r.ParseForm(); err != nil {
			return fields, files, err
		}
		for k, v := range r.PostForm {
			fields[k] = v[0]
		}
	}
	return fields, files, nil
}

func badRequest(desc string) Failure {
	return Failure{Code: http.StatusBadRequest, Description: "Bad Request: " + desc}
}

func answerError(w http.ResponseWriter, f Failure) {
	if f.Body != "" {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Code)
		_, _ = io.WriteString(w, f.Body)
		return
	}
	desc := f.Description
	if desc == "" {
		desc = http.StatusText(f.Code)
	}
	body := map[string]any{"ok": false, "error_code": f.Code, "description": desc}
	params := map[string]any{}
	if f.RetryAfter > 0 {
		params["retry_after"] = f.RetryAfter
	}
	if f.MigrateTo != 0 {
		params["migrate_to_chat_id"] = f.MigrateTo
	}
	if len(params) > 0 {
		body["parameters"] = params
	}
	writeJSON(w, f.Code, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ChatIDString is a chat id as kefu keeps it (the customer's external id).
func ChatIDString(id int64) string { return strconv.FormatInt(id, 10) }
