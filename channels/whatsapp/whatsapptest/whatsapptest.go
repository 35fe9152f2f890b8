// Package whatsapptest is a fake WhatsApp Cloud API for tests: a Graph API
// server for one business phone number that takes messages and media
// uploads, serves customers' media, records every call, and fails on demand;
// and builders that write webhook notifications and sign and post them the
// way Meta does.
//
// It speaks the documented wire format with its own types, independent of
// the whatsapp package, so a test through it checks kefu against the format
// rather than against itself.
package whatsapptest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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

// Call is one request kefu made to the fake.
type Call struct {
	Method string
	Path   string
	Bearer string // the token of the Authorization header
	Body   []byte
	At     time.Time // when it arrived
	Status int       // what the fake answered
	// Message is the decoded body of a POST /messages; WamID is set when
	// the fake accepted it.
	Message *Message
	WamID   string
}

// Message is the body of a POST /{phone_number_id}/messages.
type Message struct {
	MessagingProduct string    `json:"messaging_product"`
	RecipientType    string    `json:"recipient_type"`
	To               string    `json:"to"`
	Recipient        string    `json:"recipient"`
	Type             string    `json:"type"`
	Text             *TextBody `json:"text"`
	Image            *MediaObj `json:"image"`
	Audio            *MediaObj `json:"audio"`
	Video            *MediaObj `json:"video"`
	Document         *MediaObj `json:"document"`
	Template         *Template `json:"template"`
}

// TextBody is a text message's content.
type TextBody struct {
	Body       string `json:"body"`
	PreviewURL bool   `json:"preview_url"`
}

// MediaObj is a media message's content: an uploaded media id or a link.
type MediaObj struct {
	ID       string `json:"id"`
	Link     string `json:"link"`
	Caption  string `json:"caption"`
	Filename string `json:"filename"`
}

// Template is a template message's content.
type Template struct {
	Name     string `json:"name"`
	Language struct {
		Code string `json:"code"`
	} `json:"language"`
	Components []map[string]any `json:"components"`
}

// Failure is an error answer the fake gives instead of accepting a message.
type Failure struct {
	Status     int    // HTTP status
	Code       int    // Graph error code; 0: a body that is not Graph JSON
	Message    string // the error's message
	RetryAfter int    // seconds, sent as Retry-After when > 0
	// Delay holds the answer this long (or until the request is cancelled).
	Delay time.Duration
}

// Failures the Cloud API gives, as documented.
var (
	RateLimited   = Failure{Status: http.StatusTooManyRequests, Code: 130429, Message: "(#130429) Rate limit hit"}
	PairRateLimit = Failure{Status: http.StatusBadRequest, Code: 131056, Message: "(#131056) (Business Account, Consumer Account) pair rate limit hit"}
	WindowClosed  = Failure{Status: http.StatusBadRequest, Code: 131047, Message: "(#131047) Re-engagement message"}
	Undeliverable = Failure{Status: http.StatusBadRequest, Code: 131026, Message: "(#131026) Message undeliverable"}
	TokenExpired  = Failure{Status: http.StatusUnauthorized, Code: 190, Message: "Error validating access token: Session has expired"}
	ServerError   = Failure{Status: http.StatusInternalServerError, Code: 2, Message: "Service temporarily unavailable"}
)

// Upload is a file kefu uploaded to POST /{phone_number_id}/media.
type Upload struct {
	ID               string
	MessagingProduct string
	Type             string // the form's "type" field
	FileType         string // the file part's Content-Type
	Filename         string
	Data             []byte
}

type served struct {
	mimeType string
	data     []byte
}

// Server is a fake Graph API for one business phone number.
type Server struct {
	*httptest.Server
	PhoneNumberID string
	Token         string
	Version       string

	mu       sync.Mutex
	calls    []Call
	failures []Failure // for POST /messages
	mediaErr []Failure // for GET /{media_id}
	delay    time.Duration
	media    map[string]served
	uploads  map[string]Upload
	n        int
	arrived  chan struct{}
}

// New starts a fake for phoneNumberID that accepts token, at API version
// v21.0 (set Version before use for another).
func New(phoneNumberID, token string) *Server {
	s := &Server{PhoneNumberID: phoneNumberID, Token: token, Version: "v21.0",
		media: map[string]served{}, uploads: map[string]Upload{}, arrived: make(chan struct{}, 1)}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// FailNext makes the next len(fs) POST /messages fail with fs, in order.
func (s *Server) FailNext(fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fs...)
}

// FailMediaNext makes the next len(fs) media lookups (GET /{media_id})
// fail with fs, in order.
func (s *Server) FailMediaNext(fs ...Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mediaErr = append(s.mediaErr, fs...)
}

// Slow delays every answer by d (0: none).
func (s *Server) Slow(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// AddMedia makes a customer's media available under id, as Meta keeps the
// media of inbound messages.
func (s *Server) AddMedia(id, mimeType string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.media[id] = served{mimeType: mimeType, data: data}
}

// Calls returns every call so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Sent returns the messages the fake accepted, in order.
func (s *Server) Sent() []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Message != nil && c.WamID != "" {
			out = append(out, c)
		}
	}
	return out
}

// WaitSent waits until at least n messages were accepted or timeout
// passes, and returns them.
func (s *Server) WaitSent(n int, timeout time.Duration) []Call {
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

// Uploaded returns the upload with WhatsApp media id id.
func (s *Server) Uploaded(id string) (Upload, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[id]
	return u, ok
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 200<<20))
	s.mu.Lock()
	delay := s.delay
	s.mu.Unlock()
	if !wait(r, delay) {
		return
	}
	call := Call{Method: r.Method, Path: r.URL.Path, Body: body, At: time.Now()}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		call.Bearer = tok
	}
	call.Status = s.answer(w, r, &call)
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

func wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-r.Context().Done():
		return false
	}
}

// answer serves one call and returns the status it answered.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, call *Call) int {
	if strings.HasPrefix(r.URL.Path, "/download/") {
		return s.download(w, r, call)
	}
	if call.Bearer != s.Token {
		return graphError(w, http.StatusUnauthorized, 190, "Invalid OAuth access token - Cannot parse access token", 0)
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/"+s.Version+"/")
	if !ok {
		return graphError(w, http.StatusBadRequest, 2500, "Unknown path components: "+r.URL.Path, 0)
	}
	switch {
	case r.Method == http.MethodPost && rest == s.PhoneNumberID+"/messages":
		return s.message(w, r, call)
	case r.Method == http.MethodPost && rest == s.PhoneNumberID+"/media":
		return s.upload(w, r, call)
	case r.Method == http.MethodGet && !strings.Contains(rest, "/"):
		return s.mediaInfo(w, rest)
	}
	return graphError(w, http.StatusBadRequest, 100, "Unsupported "+r.Method+" request", 0)
}

func (s *Server) message(w http.ResponseWriter, r *http.Request, call *Call) int {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return graphError(w, http.StatusBadRequest, 100, "Content-Type must be application/json", 0)
	}
	var m Message
	if err := json.Unmarshal(call.Body, &m); err != nil {
		return graphError(w, http.StatusBadRequest, 100, "Invalid JSON: "+err.Error(), 0)
	}
	call.Message = &m
	if problem := check(m); problem != "" {
		return graphError(w, http.StatusBadRequest, 100, "(#100) Invalid parameter: "+problem, 0)
	}
	s.mu.Lock()
	var f *Failure
	if len(s.failures) > 0 {
		f = &s.failures[0]
		s.failures = s.failures[1:]
	}
	s.mu.Unlock()
	if f != nil {
		if !wait(r, f.Delay) {
			return 0
		}
		if f.Code == 0 {
			http.Error(w, f.Message, f.Status)
			return f.Status
		}
		return graphError(w, f.Status, f.Code, f.Message, f.RetryAfter)
	}
	s.mu.Lock()
	s.n++
	call.WamID = fmt.Sprintf("wamid.FAKE%06d", s.n)
	s.mu.Unlock()
	input, key := m.To, "wa_id"
	if input == "" {
		input, key = m.Recipient, "user_id"
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"messaging_product": "whatsapp",
		"contacts":          []map[string]string{{"input": input, key: input}},
		"messages":          []map[string]string{{"id": call.WamID}},
	})
}

// check says what is wrong with a message body, as the API would refuse it.
func check(m Message) string {
	switch {
	case m.MessagingProduct != "whatsapp":
		return "messaging_product must be whatsapp"
	case m.To == "" && m.Recipient == "":
		return "to or recipient is required"
	}
	ok := false
	switch m.Type {
	case "text":
		ok = m.Text != nil && m.Text.Body != ""
	case "image":
		ok = m.Image != nil && (m.Image.ID != "" || m.Image.Link != "")
	case "audio":
		ok = m.Audio != nil && (m.Audio.ID != "" || m.Audio.Link != "") && m.Audio.Caption == ""
	case "video":
		ok = m.Video != nil && (m.Video.ID != "" || m.Video.Link != "")
	case "document":
		ok = m.Document != nil && (m.Document.ID != "" || m.Document.Link != "")
	case "template":
		ok = m.Template != nil && m.Template.Name != "" && m.Template.Language.Code != ""
	}
	if !ok {
		return fmt.Sprintf("a %q message needs its %q object", m.Type, m.Type)
	}
	return ""
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request, call *Call) int {
	r.Body = io.NopCloser(bytes.NewReader(call.Body))
	if err := r.ParseMultipartForm(64 << 20); err != nil {
		return graphError(w, http.StatusBadRequest, 100, "expected multipart/form-data: "+err.Error(), 0)
	}
	f, fh, err := r.FormFile("file")
	if err != nil {
		return graphError(w, http.StatusBadRequest, 100, "(#100) The parameter file is required", 0)
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	u := Upload{MessagingProduct: r.FormValue("messaging_product"), Type: r.FormValue("type"),
		FileType: fh.Header.Get("Content-Type"), Filename: fh.Filename, Data: data}
	if u.MessagingProduct != "whatsapp" || u.Type == "" {
		return graphError(w, http.StatusBadRequest, 100, "(#100) messaging_product and type are required", 0)
	}
	s.mu.Lock()
	s.n++
	u.ID = fmt.Sprintf("%d", 900000+s.n)
	s.uploads[u.ID] = u
	s.mu.Unlock()
	return writeJSON(w, http.StatusOK, map[string]string{"id": u.ID})
}

func (s *Server) mediaInfo(w http.ResponseWriter, id string) int {
	s.mu.Lock()
	m, ok := s.media[id]
	var f *Failure
	if len(s.mediaErr) > 0 {
		f = &s.mediaErr[0]
		s.mediaErr = s.mediaErr[1:]
	}
	s.mu.Unlock()
	if f != nil {
		return graphError(w, f.Status, f.Code, f.Message, f.RetryAfter)
	}
	if !ok {
		return graphError(w, http.StatusBadRequest, 100, "Unsupported get request. Object with ID '"+id+"' does not exist", 0)
	}
	sum := sha256.Sum256(m.data)
	return writeJSON(w, http.StatusOK, map[string]any{
		"messaging_product": "whatsapp",
		"url":               s.URL + "/download/" + id + "?ext=1&hash=x",
		"mime_type":         m.mimeType,
		"sha256":            hex.EncodeToString(sum[:]),
		"file_size":         len(m.data),
		"id":                id,
	})
}

func (s *Server) download(w http.ResponseWriter, r *http.Request, call *Call) int {
	if call.Bearer != s.Token {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return http.StatusUnauthorized
	}
	s.mu.Lock()
	m, ok := s.media[strings.TrimPrefix(r.URL.Path, "/download/")]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return http.StatusNotFound
	}
	w.Header().Set("Content-Type", m.mimeType)
	w.Header().Set("Content-Length", strconv.Itoa(len(m.data)))
	_, _ = w.Write(m.data)
	return http.StatusOK
}

func graphError(w http.ResponseWriter, status, code int, msg string, retryAfter int) int {
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	return writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": msg, "type": "OAuthException", "code": code,
		"error_data": map[string]string{"messaging_product": "whatsapp", "details": msg},
		"fbtrace_id": "AbCdEfGh",
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
	return status
}

// Webhooks: building notifications, and posting them as Meta does.

// Sign returns the X-Hub-Signature-256 value Meta sends with body.
func Sign(appSecret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(appSecret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Post signs body with appSecret and posts it to url (a /webhooks/NAME).
func Post(client *http.Client, url, appSecret string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", Sign(appSecret, body))
	return client.Do(req)
}

// Change is one "messages" change of a notification.
type Change map[string]any

// Customer is a message's sender. WaID (their phone number) or UserID
// (their business-scoped user id) may be empty, as WhatsApp allows.
type Customer struct {
	WaID     string
	UserID   string
	Name     string
	Username string
}

// Msg is one inbound message of a change; see the builders below.
type Msg map[string]any

// Body is a notification with one entry holding the changes.
func Body(changes ...Change) []byte {
	return Entries(changes)
}

// Entries is a notification with one entry per list of changes.
func Entries(entries ...[]Change) []byte {
	var es []map[string]any
	for i, chs := range entries {
		var cs []map[string]any
		for _, c := range chs {
			cs = append(cs, map[string]any{"field": "messages", "value": map[string]any(c)})
		}
		es = append(es, map[string]any{"id": fmt.Sprintf("10200300400%d", i), "changes": cs})
	}
	b, err := json.Marshal(map[string]any{"object": "whatsapp_business_account", "entry": es})
	if err != nil {
		panic(err)
	}
	return b
}

func metadata(phoneNumberID string) map[string]string {
	return map[string]string{"display_phone_number": "15550001234", "phone_number_id": phoneNumberID}
}

// Messages is a change carrying msgs from one customer to phoneNumberID.
func Messages(phoneNumberID string, from Customer, msgs ...Msg) Change {
	contact := map[string]any{"profile": map[string]string{"name": from.Name}}
	if from.Username != "" {
		contact["profile"].(map[string]string)["username"] = from.Username
	}
	if from.WaID != "" {
		contact["wa_id"] = from.WaID
	}
	if from.UserID != "" {
		contact["user_id"] = from.UserID
	}
	var ms []map[string]any
	for _, m := range msgs {
		mm := map[string]any(m)
		if from.WaID != "" {
			mm["from"] = from.WaID
		}
		if from.UserID != "" {
			mm["from_user_id"] = from.UserID
		}
		ms = append(ms, mm)
	}
	return Change{"messaging_product": "whatsapp", "metadata": metadata(phoneNumberID),
		"contacts": []map[string]any{contact}, "messages": ms}
}

// Statuses is a change carrying statuses of messages the business sent.
func Statuses(phoneNumberID string, sts ...Msg) Change {
	var ss []map[string]any
	for _, s := range sts {
		ss = append(ss, map[string]any(s))
	}
	return Change{"messaging_product": "whatsapp", "metadata": metadata(phoneNumberID), "statuses": ss}
}

func ts(at time.Time) string { return strconv.FormatInt(at.Unix(), 10) }

func msg(id, typ string, content any) Msg {
	return Msg{"id": id, "timestamp": ts(time.Now()), "type": typ, typ: content}
}

// Text is a text message.
func Text(id, body string) Msg { return msg(id, "text", map[string]string{"body": body}) }

// Image is an image message; its bytes are served by AddMedia(mediaID…).
func Image(id, mediaID, mimeType, caption string) Msg {
	return msg(id, "image", map[string]string{"id": mediaID, "mime_type": mimeType, "sha256": "x", "caption": caption})
}

// Document is a document message.
func Document(id, mediaID, mimeType, filename, caption string) Msg {
	return msg(id, "document", map[string]string{"id": mediaID, "mime_type": mimeType, "sha256": "x", "filename": filename, "caption": caption})
}

// Audio is an audio message; voice marks one recorded in the app.
func Audio(id, mediaID, mimeType string, voice bool) Msg {
	return msg(id, "audio", map[string]any{"id": mediaID, "mime_type": mimeType, "sha256": "x", "voice": voice})
}

// Video is a video message.
func Video(id, mediaID, mimeType, caption string) Msg {
	return msg(id, "video", map[string]string{"id": mediaID, "mime_type": mimeType, "sha256": "x", "caption": caption})
}

// Sticker is a sticker message.
func Sticker(id, mediaID string, animated bool) Msg {
	return msg(id, "sticker", map[string]any{"id": mediaID, "mime_type": "image/webp", "sha256": "x", "animated": animated})
}

// Location is a shared location.
func Location(id string, lat, lng float64, name, address string) Msg {
	return msg(id, "location", map[string]any{"latitude": lat, "longitude": lng, "name": name, "address": address})
}

// Card is a contact card for Contacts.
func Card(name, phone, email string) map[string]any {
	c := map[string]any{"name": map[string]string{"formatted_name": name, "first_name": name}}
	if phone != "" {
		c["phones"] = []map[string]string{{"phone": phone, "type": "CELL"}}
	}
	if email != "" {
		c["emails"] = []map[string]string{{"email": email, "type": "WORK"}}
	}
	return c
}

// Contacts is a message sharing contact cards.
func Contacts(id string, cards ...map[string]any) Msg { return msg(id, "contacts", cards) }

// ButtonReply is a tap on an interactive message's reply button.
func ButtonReply(id, replyID, title string) Msg {
	return msg(id, "interactive", map[string]any{"type": "button_reply", "button_reply": map[string]string{"id": replyID, "title": title}})
}

// ListReply is a pick from an interactive message's list.
func ListReply(id, rowID, title, description string) Msg {
	return msg(id, "interactive", map[string]any{"type": "list_reply",
		"list_reply": map[string]string{"id": rowID, "title": title, "description": description}})
}

// QuickReply is a tap on a template's quick-reply button.
func QuickReply(id, text, payload string) Msg {
	return msg(id, "button", map[string]string{"text": text, "payload": payload})
}

// Reaction is an emoji reaction to message toWamid ("" removes it).
func Reaction(id, toWamid, emoji string) Msg {
	return msg(id, "reaction", map[string]string{"message_id": toWamid, "emoji": emoji})
}

// Unsupported is a message type the Cloud API does not support.
func Unsupported(id string) Msg {
	return Msg{"id": id, "timestamp": ts(time.Now()), "type": "unsupported",
		"errors": []map[string]any{{"code": 131051, "title": "Message type unknown", "message": "Message type unknown"}}}
}

// Status is a status (sent, delivered, read) of message wamid.
func Status(wamid, status, recipient string, at time.Time) Msg {
	return Msg{"id": wamid, "status": status, "timestamp": ts(at), "recipient_id": recipient,
		"pricing": map[string]any{"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"}}
}

// FailedStatus is a "failed" status of message wamid with the error code
// and title Meta gives.
func FailedStatus(wamid, recipient string, at time.Time, code int, title string) Msg {
	st := Status(wamid, "failed", recipient, at)
	delete(st, "pricing")
	st["errors"] = []map[string]any{{"code": code, "title": title, "message": title,
		"error_data": map[string]string{"details": title}}}
	return st
}
