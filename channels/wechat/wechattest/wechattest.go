// Package wechattest is a fake WeChat Official Account API for tests of
// the wechat channel, in the spirit of net/http/httptest: an HTTP server
// speaking WeChat's documented wire format for the calls kefu makes
// (stable_token and token, message/custom/send, media/upload, media/get),
// which records what it is sent and fails on demand (an errcode, an HTTP
// status, a delay). It also builds callbacks signed (and encrypted) the way
// WeChat's servers send them.
//
// Point the channel's api_base at Server.URL.
package wechattest

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
	PathStableToken = "/cgi-bin/stable_token"
	PathToken       = "/cgi-bin/token"
	PathCustomSend  = "/cgi-bin/message/custom/send"
	PathMediaUpload = "/cgi-bin/media/upload"
	PathMediaGet    = "/cgi-bin/media/get"
	pathVideo       = "/video/"
)

// TokenTTL is the expires_in the fake answers (WeChat's is 7200 s). It must
// exceed the library's safety margins (300 s stable, 1500 s default).
const TokenTTL = 7200

// Sent is one customer-service message the fake accepted.
type Sent struct {
	ToUser  string `json:"touser"`
	MsgType string `json:"msgtype"`
	Text    struct {
		Content string `json:"content"`
	} `json:"text"`
	Image struct {
		MediaID string `json:"media_id"`
	} `json:"image"`
	Voice struct {
		MediaID string `json:"media_id"`
	} `json:"voice"`
	At time.Time `json:"-"`
}

// Call is one API request the fake answered.
type Call struct {
	Path    string
	Token   string // the access_token it carried
	ErrCode int    // what the fake answered (0: success)
	Status  int    // HTTP status answered
}

// Failure is what the fake does instead of (or before) answering a call.
// Delay applies first; then a non-zero Status answers that HTTP status, a
// non-zero ErrCode answers that errcode, and otherwise the call succeeds.
type Failure struct {
	ErrCode int
	Status  int
	Delay   time.Duration
}

// Media is a file the fake holds under a media_id.
type Media struct {
	Type  string // "image", "voice", "video"…
	CType string // Content-Type served
	Body  []byte
}

// Server is a fake Official Account API.
type Server struct {
	*httptest.Server
	AppID, AppSecret string

	mu          sync.Mutex
	token       string
	tokenSerial int
	fetches     int
	calls       []Call
	sent        []Sent
	failures    map[string][]Failure
	media       map[string]Media
	uploads     []Media
	arrived     chan struct{}
}

// NewServer starts a fake API for the account appID/appSecret.
func NewServer(appID, appSecret string) *Server {
	s := &Server{AppID: appID, AppSecret: appSecret, failures: map[string][]Failure{}, media: map[string]Media{}, arrived: make(chan struct{}, 1<<16)}
	mux := http.NewServeMux()
	mux.HandleFunc(PathStableToken, s.stableToken)
	mux.HandleFunc(PathToken, s.plainToken)
	mux.HandleFunc(PathCustomSend, s.customSend)
	mux.HandleFunc(PathMediaUpload, s.mediaUpload)
	mux.HandleFunc(PathMediaGet, s.mediaGet)
	mux.HandleFunc(pathVideo, s.video)
	s.Server = httptest.NewServer(mux)
	return s
}

// Fail queues failures for the next calls to path (PathCustomSend…), in order.
func (s *Server) Fail(path string, fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[path] = append(s.failures[path], fs...)
}

// ExpireToken makes the current access token invalid: calls carrying it are
// answered errcode 40001, and the next token fetch issues a new one.
func (s *Server) ExpireToken() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = ""
}

// Token returns the access token currently valid ("" before the first fetch).
func (s *Server) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// TokenFetches reports how many tokens were requested.
func (s *Server) TokenFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// AddMedia makes media/get serve m under id. A "video" is answered, as
// WeChat does, with JSON holding a video_url on this server.
func (s *Server) AddMedia(id string, m Media) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.media[id] = m
}

// Uploads returns the files uploaded through media/upload.
func (s *Server) Uploads() []Media {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Media(nil), s.uploads...)
}

// Calls returns the calls answered so far, in order.
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

// Sent returns the customer-service messages accepted, in order.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// WaitSent waits until at least n messages were accepted or timeout
// passes, and returns them.
func (s *Server) WaitSent(n int, timeout time.Duration) []Sent {
	deadline := time.After(timeout)
	for {
		if got := s.Sent(); len(got) >= n {
			return got
		}
		select {
		case <-s.arrived:
		case <-deadline:
			return s.Sent()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// takeFailure pops the next failure for path and applies its delay (giving
// up if the client goes away). ok is false when the client went away.
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

// answer writes a JSON answer (errcode 0 unless code is set) and records the call.
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
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// errmsg is WeChat's text for the codes the fake answers.
func errmsg(code int) string {
	switch code {
	case 0:
		return "ok"
	case -1:
		return "system error"
	case 40001:
		return "invalid credential, access_token is invalid or not latest"
	case 40007:
		return "invalid media_id"
	case 40013:
		return "invalid appid"
	case 40125:
		return "invalid appsecret"
	case 42001:
		return "access_token expired"
	case 45015:
		return "response out of time limit or subscription is canceled"
	case 45047:
		return "out of response count limit"
	}
	return "error " + strconv.Itoa(code)
}

// fail answers f (status or errcode) and reports whether it did.
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

func (s *Server) issue(force bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches++
	if s.token == "" || force {
		s.tokenSerial++
		s.token = fmt.Sprintf("%s-token-%d", s.AppID, s.tokenSerial)
	}
	return s.token
}

func (s *Server) stableToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil || req.GrantType != "client_credential" {
		s.answer(w, Call{Path: PathStableToken, ErrCode: 40002}, map[string]any{"errmsg": "invalid grant_type or body"})
		return
	}
	s.tokenAnswer(w, r, PathStableToken, req.AppID, req.Secret, req.ForceRefresh)
}

func (s *Server) plainToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// A plain token replaces the previous one, as WeChat's does.
	s.tokenAnswer(w, r, PathToken, q.Get("appid"), q.Get("secret"), true)
}

func (s *Server) tokenAnswer(w http.ResponseWriter, r *http.Request, path, appID, secret string, force bool) {
	f, ok := s.takeFailure(r, path)
	if !ok || s.fail(w, path, "", f) {
		return
	}
	switch {
	case appID != s.AppID:
		s.answer(w, Call{Path: path, ErrCode: 40013}, nil)
	case secret != s.AppSecret:
		s.answer(w, Call{Path: path, ErrCode: 40125}, nil)
	default:
		tok := s.issue(force)
		s.answer(w, Call{Path: path, Token: tok}, map[string]any{"access_token": tok, "expires_in": TokenTTL})
	}
}

// authorize checks the access_token of a call; it answers 40001 and
// returns false for a wrong one.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, path string) (string, bool) {
	tok := r.URL.Query().Get("access_token")
	s.mu.Lock()
	valid := tok != "" && tok == s.token
	s.mu.Unlock()
	if !valid {
		s.answer(w, Call{Path: path, Token: tok, ErrCode: 40001}, nil)
		return tok, false
	}
	return tok, true
}

func (s *Server) customSend(w http.ResponseWriter, r *http.Request) {
	f, ok := s.takeFailure(r, PathCustomSend)
	if !ok {
		return
	}
	tok, ok := s.authorize(w, r, PathCustomSend)
	if !ok || s.fail(w, PathCustomSend, tok, f) {
		return
	}
	var m Sent
	if r.Method != http.MethodPost || json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m) != nil || m.ToUser == "" {
		s.answer(w, Call{Path: PathCustomSend, Token: tok, ErrCode: 44002}, map[string]any{"errmsg": "empty post data"})
		return
	}
	switch m.MsgType {
	case "text", "image", "voice":
	default:
		s.answer(w, Call{Path: PathCustomSend, Token: tok, ErrCode: 40008}, map[string]any{"errmsg": "invalid message type"})
		return
	}
	if (m.MsgType == "image" && !s.hasMedia(m.Image.MediaID)) || (m.MsgType == "voice" && !s.hasMedia(m.Voice.MediaID)) {
		s.answer(w, Call{Path: PathCustomSend, Token: tok, ErrCode: 40007}, nil)
		return
	}
	m.At = time.Now()
	s.mu.Lock()
	s.sent = append(s.sent, m)
	s.mu.Unlock()
	s.answer(w, Call{Path: PathCustomSend, Token: tok}, nil)
}

func (s *Server) hasMedia(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.media[id]
	return ok
}

func (s *Server) mediaUpload(w http.ResponseWriter, r *http.Request) {
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
	if err != nil || (typ != "image" && typ != "voice" && typ != "video" && typ != "thumb") {
		s.answer(w, Call{Path: PathMediaUpload, Token: tok, ErrCode: 40004}, map[string]any{"errmsg": "invalid media type or no media field"})
		return
	}
	defer file.Close()
	body, _ := io.ReadAll(file)
	m := Media{Type: typ, CType: hdr.Header.Get("Content-Type"), Body: body}
	s.mu.Lock()
	id := fmt.Sprintf("up-%s-%d", typ, len(s.uploads)+1)
	s.uploads = append(s.uploads, m)
	s.media[id] = m
	s.mu.Unlock()
	s.answer(w, Call{Path: PathMediaUpload, Token: tok}, map[string]any{"type": typ, "media_id": id, "created_at": time.Now().Unix()})
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
	switch {
	case !found:
		s.answer(w, Call{Path: PathMediaGet, Token: tok, ErrCode: 40007}, nil)
	case m.Type == "video":
		s.answer(w, Call{Path: PathMediaGet, Token: tok}, map[string]any{"video_url": s.URL + pathVideo + id})
	default:
		s.record(Call{Path: PathMediaGet, Token: tok, Status: http.StatusOK})
		w.Header().Set("Content-Type", m.CType)
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": id + ext(m.CType)}))
		w.Header().Set("Content-Length", strconv.Itoa(len(m.Body)))
		_, _ = w.Write(m.Body)
	}
}

func (s *Server) video(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, pathVideo)
	s.mu.Lock()
	m, found := s.media[id]
	s.mu.Unlock()
	if !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", m.CType)
	_, _ = w.Write(m.Body)
}

func ext(ctype string) string {
	switch ctype {
	case "image/jpeg":
		return ".jpg"
	case "image/png":
		return ".png"
	case "audio/amr":
		return ".amr"
	}
	return ""
}
