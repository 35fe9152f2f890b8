// Package wecomtest is a fake Work WeChat (WeCom) API for tests of the
// wecom channel, in the spirit of net/http/httptest: an HTTP server
// speaking Work WeChat's documented wire format for the calls kefu makes
// (gettoken, message/send, media/upload, media/get), which records the app
// messages it is sent and fails on demand (an errcode, an HTTP status, a
// delay). It also builds app callbacks encrypted and signed the way Work
// WeChat sends them.
//
// Point the channel's api_base at Server.URL.
package wecomtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// API paths the fake serves.
const (
	PathToken       = "/cgi-bin/gettoken"
	PathSend        = "/cgi-bin/message/send"
	PathMediaUpload = "/cgi-bin/media/upload"
	PathMediaGet    = "/cgi-bin/media/get"
)

// TokenTTL is the expires_in the fake answers (Work WeChat's is 7200 s; it
// must exceed the library's 1500 s margin).
const TokenTTL = 7200

// AppMessage is one app message the fake accepted.
type AppMessage struct {
	ToUser  string
	MsgType string
	AgentID int64
	Text    string // for text
	MediaID string // for image
	Image   []byte // the uploaded image, for image
	At      time.Time
}

// Call is one API request the fake answered.
type Call struct {
	Path    string
	Token   string
	ErrCode int
	Status  int
}

// Failure is what the fake does instead of (or before) answering a call:
// Delay first; then a non-zero Status answers that HTTP status, a non-zero
// ErrCode that errcode; otherwise the call goes through.
type Failure struct {
	ErrCode int
	Status  int
	Delay   time.Duration
}

// Media is a file the fake holds under a media_id.
type Media struct {
	CType string
	Body  []byte
}

// Server is a fake Work WeChat API for one app.
type Server struct {
	*httptest.Server
	CorpID, Secret string
	AgentID        int64

	mu          sync.Mutex
	token       string
	tokenSerial int
	fetches     int
	calls       []Call
	got         []AppMessage
	failures    map[string][]Failure
	media       map[string]Media
	members     map[string]bool // nil: everyone is a member
	arrived     chan struct{}
}

// NewServer starts a fake API for the app agentID of corpID, whose secret
// is secret.
func NewServer(corpID, secret string, agentID int64) *Server {
	s := &Server{CorpID: corpID, Secret: secret, AgentID: agentID, failures: map[string][]Failure{}, media: map[string]Media{}, arrived: make(chan struct{}, 1<<16)}
	mux := http.NewServeMux()
	mux.HandleFunc(PathToken, s.gettoken)
	mux.HandleFunc(PathSend, s.send)
	mux.HandleFunc(PathMediaUpload, s.upload)
	mux.HandleFunc(PathMediaGet, s.mediaGet)
	s.Server = httptest.NewServer(mux)
	return s
}

// Fail queues failures for the next calls to path, in order.
func (s *Server) Fail(path string, fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[path] = append(s.failures[path], fs...)
}

// ExpireToken makes the current access token invalid (42001 for calls that
// carry it); the next gettoken issues a new one.
func (s *Server) ExpireToken() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = ""
}

// TokenFetches reports how many tokens were requested.
func (s *Server) TokenFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// SetMembers limits the app's visible range to userids: messages to anyone
// else are answered with them in invaliduser, as Work WeChat does.
func (s *Server) SetMembers(userids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members = map[string]bool{}
	for _, u := range userids {
		s.members[strings.ToLower(u)] = true
	}
}

// AddMedia makes media/get serve m under id (an image an agent sent).
func (s *Server) AddMedia(id string, m Media) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.media[id] = m
}

// Calls returns the calls answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsTo returns the calls to path.
func (s *Server) CallsTo(path string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Path == path {
			out = append(out, c)
		}
	}
	return out
}

// Messages returns the app messages accepted, in order.
func (s *Server) Messages() []AppMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AppMessage(nil), s.got...)
}

// MessagesTo returns the app messages accepted for userid.
func (s *Server) MessagesTo(userid string) []AppMessage {
	var out []AppMessage
	for _, m := range s.Messages() {
		if strings.EqualFold(m.ToUser, userid) {
			out = append(out, m)
		}
	}
	return out
}

// WaitFor waits until cond holds for the messages accepted so far, or
// timeout passes; it returns the messages and whether cond held.
func (s *Server) WaitFor(timeout time.Duration, cond func([]AppMessage) bool) ([]AppMessage, bool) {
	deadline := time.After(timeout)
	for {
		got := s.Messages()
		if cond(got) {
			return got, true
		}
		select {
		case <-s.arrived:
		case <-deadline:
			got = s.Messages()
			return got, cond(got)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) takeFailure(r *http.Request, path string) (Failure, bool) {
	s.mu.Lock()
	var f Failure
	if q := s.failures[path]; len(q) > 0 {
		f, s.failures[path] = q[0], q[1:]
	}
	s.mu.Unlock()
	if f.Delay > 0 {
		// Read the body first: the server notices a client that gave up
		// only once the body is consumed.
		body, _ := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return f, false
		}
	}
	return f, true
}

func (s *Server) record(c Call) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

func (s *Server) answer(w http.ResponseWriter, c Call, v map[string]any) {
	if v == nil {
		v = map[string]any{}
	}
	v["errcode"] = c.ErrCode
	if _, ok := v["errmsg"]; !ok {
		v["errmsg"] = errmsg(c.ErrCode)
	}
	c.Status = http.StatusOK
	s.record(c)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_ = json.NewEncoder(w).Encode(v)
}

func errmsg(code int) string {
	switch code {
	case 0:
		return "ok"
	case -1:
		return "system busy"
	case 40001:
		return "invalid secret"
	case 40007:
		return "invalid media_id"
	case 40013:
		return "invalid corpid"
	case 40014, 42001:
		return "access_token expired"
	case 45009:
		return "api freq out of limit"
	case 60020:
		return "not allow to access from your ip"
	case 81013:
		return "user & party & tag all invalid"
	}
	return "error " + strconv.Itoa(code)
}

func (s *Server) fail(w http.ResponseWriter, path, tok string, f Failure) bool {
	switch {
	case f.Status != 0:
		s.record(Call{Path: path, Token: tok, Status: f.Status})
		http.Error(w, http.StatusText(f.Status), f.Status)
		return true
	case f.ErrCode != 0:
		s.answer(w, Call{Path: path, Token: tok, ErrCode: f.ErrCode}, nil)
		return true
	}
	return false
}

func (s *Server) gettoken(w http.ResponseWriter, r *http.Request) {
	f, ok := s.takeFailure(r, PathToken)
	if !ok || s.fail(w, PathToken, "", f) {
		return
	}
	q := r.URL.Query()
	switch {
	case q.Get("corpid") != s.CorpID:
		s.answer(w, Call{Path: PathToken, ErrCode: 40013}, nil)
	case q.Get("corpsecret") != s.Secret:
		s.answer(w, Call{Path: PathToken, ErrCode: 40001}, nil)
	default:
		s.mu.Lock()
		s.fetches++
		if s.token == "" {
			s.tokenSerial++
			s.token = fmt.Sprintf("%s-%d-token-%d", s.CorpID, s.AgentID, s.tokenSerial)
		}
		tok := s.token
		s.mu.Unlock()
		s.answer(w, Call{Path: PathToken, Token: tok}, map[string]any{"access_token": tok, "expires_in": TokenTTL})
	}
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request, path string) (string, bool) {
	tok := r.URL.Query().Get("access_token")
	s.mu.Lock()
	valid := tok != "" && tok == s.token
	s.mu.Unlock()
	if !valid {
		s.answer(w, Call{Path: path, Token: tok, ErrCode: 42001}, nil)
		return tok, false
	}
	return tok, true
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	f, ok := s.takeFailure(r, PathSend)
	if !ok {
		return
	}
	tok, ok := s.authorize(w, r, PathSend)
	if !ok || s.fail(w, PathSend, tok, f) {
		return
	}
	var req struct {
		ToUser  string          `json:"touser"`
		MsgType string          `json:"msgtype"`
		AgentID json.RawMessage `json:"agentid"`
		Text    struct {
			Content string `json:"content"`
		} `json:"text"`
		Image struct {
			MediaID string `json:"media_id"`
		} `json:"image"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req) != nil {
		s.answer(w, Call{Path: PathSend, Token: tok, ErrCode: 44004}, map[string]any{"errmsg": "empty content"})
		return
	}
	agent, err := strconv.ParseInt(strings.Trim(string(req.AgentID), `"`), 10, 64)
	if err != nil || agent != s.AgentID {
		s.answer(w, Call{Path: PathSend, Token: tok, ErrCode: 40056}, map[string]any{"errmsg": "invalid agentid"})
		return
	}
	m := AppMessage{ToUser: req.ToUser, MsgType: req.MsgType, AgentID: agent, At: time.Now()}
	switch req.MsgType {
	case "text":
		if req.Text.Content == "" || len(req.Text.Content) > 2048 {
			s.answer(w, Call{Path: PathSend, Token: tok, ErrCode: 44004}, map[string]any{"errmsg": "empty or too long content"})
			return
		}
		m.Text = req.Text.Content
	case "image":
		s.mu.Lock()
		med, found := s.media[req.Image.MediaID]
		s.mu.Unlock()
		if !found {
			s.answer(w, Call{Path: PathSend, Token: tok, ErrCode: 40007}, nil)
			return
		}
		m.MediaID, m.Image = req.Image.MediaID, med.Body
	default:
		s.answer(w, Call{Path: PathSend, Token: tok, ErrCode: 40008}, map[string]any{"errmsg": "invalid message type"})
		return
	}
	s.mu.Lock()
	member := s.members == nil || s.members[strings.ToLower(req.ToUser)]
	if member {
		s.got = append(s.got, m)
	}
	n := len(s.got)
	s.mu.Unlock()
	if !member {
		s.answer(w, Call{Path: PathSend, Token: tok}, map[string]any{"invaliduser": req.ToUser})
		return
	}
	s.answer(w, Call{Path: PathSend, Token: tok}, map[string]any{"invaliduser": "", "msgid": fmt.Sprintf("msg-%d", n)})
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	f, ok := s.takeFailure(r, PathMediaUpload)
	if !ok {
		return
	}
	tok, ok := s.authorize(w, r, PathMediaUpload)
	if !ok || s.fail(w, PathMediaUpload, tok, f) {
		return
	}
	typ := r.URL.Query().Get("type")
	file, hdr, err := r.FormFile("media")
	if err != nil || (typ != "image" && typ != "voice" && typ != "video" && typ != "file") {
		s.answer(w, Call{Path: PathMediaUpload, Token: tok, ErrCode: 40004}, map[string]any{"errmsg": "invalid media type or no media field"})
		return
	}
	defer file.Close()
	body, _ := io.ReadAll(file)
	s.mu.Lock()
	id := fmt.Sprintf("wc-up-%d", len(s.media)+1)
	s.media[id] = Media{CType: hdr.Header.Get("Content-Type"), Body: body}
	s.mu.Unlock()
	s.answer(w, Call{Path: PathMediaUpload, Token: tok}, map[string]any{"type": typ, "media_id": id, "created_at": strconv.FormatInt(time.Now().Unix(), 10)})
}

func (s *Server) mediaGet(w http.ResponseWriter, r *http.Request) {
	f, ok := s.takeFailure(r, PathMediaGet)
	if !ok {
		return
	}
	tok, ok := s.authorize(w, r, PathMediaGet)
	if !ok || s.fail(w, PathMediaGet, tok, f) {
		return
	}
	id := r.URL.Query().Get("media_id")
	s.mu.Lock()
	m, found := s.media[id]
	s.mu.Unlock()
	if !found {
		s.answer(w, Call{Path: PathMediaGet, Token: tok, ErrCode: 40007}, nil)
		return
	}
	s.record(Call{Path: PathMediaGet, Token: tok, Status: http.StatusOK})
	w.Header().Set("Content-Type", m.CType)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": id + ".png"}))
	_, _ = w.Write(m.Body)
}
