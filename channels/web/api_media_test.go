package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	_ "github.com/kefuhq/kefu/channels/whatsapp" // a channel with a reply window and templates
	"github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/core/storetest"
	"github.com/kefuhq/kefu/node/nodetest"
)

// End-to-end tests of what the console adds to the API (agents' uploads
// and downloads, media replies, unread counts, reply windows and templates)
// and of how the console itself is served, on a real node.

const (
	consoleAdminMail = "root@example.com"
	consoleAdminPass = "root-password"
	consoleMaxBytes  = 64 << 10 // the test node's media.max_bytes
)

type consoleNode struct {
	t     *testing.T
	n     *nodetest.Node
	token string // the admin's
	wa    *whatsapptest.Server
}

func startConsoleNode(t *testing.T) *consoleNode {
	t.Helper()
	wa := whatsapptest.New("1234", "wa-token")
	t.Cleanup(wa.Close)
	n := nodetest.Start(t, fmt.Sprintf(`
media: {max_bytes: %d}
routing: {offline_reply: ""}
agents:
  - {email: %s, name: Root, role: admin, password: %s}
channels:
  web: {enabled: true}
  wa:
    type: whatsapp
    enabled: true
    phone_number_id: "1234"
    access_token: wa-token
    app_secret: wa-secret
    verify_token: wa-verify
    api_base: %q
    templates:
      reopen: {name: reopen_conversation, language: en_US}
      followup: {name: follow_up, language: en_US}
`, consoleMaxBytes, consoleAdminMail, consoleAdminPass, wa.URL))
	// Quick logins: the seeded password re-hashed at the lowest cost.
	a := n.Agent(t, consoleAdminMail)
	hash, err := bcrypt.GenerateFromPassword([]byte(consoleAdminPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	a.PasswordHash = string(hash)
	if err := storetest.UpdateAgent(n.Service().Store(), a); err != nil {
		t.Fatal(err)
	}
	h := &consoleNode{t: t, n: n, wa: wa}
	var l apiLogin
	h.do("POST", "/api/v1/auth/login", "", "application/json",
		fmt.Sprintf(`{"email":%q,"password":%q}`, consoleAdminMail, consoleAdminPass)).want(t, "login", http.StatusOK).decode(t, &l)
	h.token = l.Token
	return h
}

// do sends body (a string or bytes) with the given Content-Type.
func (h *consoleNode) do(method, path, token, ctype string, body any) apiResp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.n.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return apiResp{status: resp.StatusCode, header: resp.Header, body: data}
}

func (h *consoleNode) json(method, path string, v any) apiResp {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.do(method, path, h.token, "application/json", b)
}

// upload posts content as the multipart "file" part named name.
func (h *consoleNode) upload(token, field, name string, content []byte) apiResp {
	h.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile(field, name)
	if err != nil {
		h.t.Fatal(err)
	}
	_, _ = fw.Write(content)
	_ = mw.Close()
	return h.do("POST", "/api/v1/uploads", token, mw.FormDataContentType(), buf.Bytes())
}

func (h *consoleNode) ingest(channel, from, text string) core.Ingested {
	h.t.Helper()
	res, err := h.n.Service().Ingest(context.Background(), core.Inbound{Channel: channel, ExternalID: from, Name: "Zhang San",
		Message: core.Message{Kind: core.KindText, Text: text}})
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

type consoleMedia struct {
	Key, Name, Type, Preview string
	Size                     int64
}

type consoleMessage struct {
	ID         int64         `json:"id"`
	Seq        int64         `json:"seq"`
	Kind       string        `json:"kind"`
	Text       string        `json:"text"`
	Visibility string        `json:"visibility"`
	Media      *consoleMedia `json:"media"`
}

type consoleConversation struct {
	ID         int64      `json:"id"`
	Unread     int        `json:"unread"`
	WindowEnds *time.Time `json:"window_ends"`
	LastIn     *time.Time `json:"last_inbound_at"`
}

func consolePNG(t *testing.T, w, hgt int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, hgt))
	for x := range w {
		for y := range hgt {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 5), 200, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestConsoleServedWithStrictCSP(t *testing.T) {
	h := startConsoleNode(t)
	for _, path := range []string{"/console/", "/console/app.js", "/console/console.css"} {
		r := h.do("GET", path, "", "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d", path, r.status)
		}
		csp := r.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self';", "style-src 'self';", "img-src 'self' blob:;",
			"connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: CSP %q lacks %q", path, csp, want)
			}
		}
		for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*"} {
			if strings.Contains(csp, bad) {
				t.Errorf("GET %s: CSP %q allows %s", path, csp, bad)
			}
		}
		if r.header.Get("X-Frame-Options") != "DENY" || r.header.Get("Referrer-Policy") != "no-referrer" ||
			r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: headers %v", path, r.header)
		}
	}
	if r := h.do("GET", "/console/", "", "", nil); !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("console page type %q", r.header.Get("Content-Type"))
	}
	if r := h.do("GET", "/console/app.js", "", "", nil); !strings.HasPrefix(r.header.Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js type %q", r.header.Get("Content-Type"))
	}
	for path, to := range map[string]string{"/": "/console/", "/console": "/console/"} {
		if r := h.do("GET", path, "", "", nil); r.status/100 != 3 || r.header.Get("Location") != to {
			t.Errorf("GET %s: %d to %q, want a redirect to %s", path, r.status, r.header.Get("Location"), to)
		}
	}
}

// The console's files hold no inline script, no inline event handler, no
// inline style, and none of the calls that parse strings as HTML or code:
// what the CSP forbids is not used, and text can only go in as text.
func TestConsoleFilesAreInert(t *testing.T) {
	files := consoleFiles(t)
	if len(files) < 4 {
		t.Fatalf("console files: %v", files)
	}
	inlineScript := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)
	handlerAttr := regexp.MustCompile(`(?i)<[^>]+\son[a-z]+\s*=`)
	styleAttr := regexp.MustCompile(`(?i)<[^>]+\sstyle\s*=|<style`)
	dangerous := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new Function|setTimeout\(\s*["'\x60]|srcdoc`)
	for name, body := range files {
		switch {
		case strings.HasSuffix(name, ".html"):
			if m := inlineScript.FindString(body); m != "" {
				t.Errorf("%s: inline script %q", name, m)
			}
			if m := handlerAttr.FindString(body); m != "" {
				t.Errorf("%s: inline event handler %q", name, m)
			}
			if m := styleAttr.FindString(body); m != "" {
				t.Errorf("%s: inline style %q", name, m)
			}
		case strings.HasSuffix(name, ".js"):
			for i, line := range strings.Split(body, "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "//") {
					continue
				}
				if m := dangerous.FindString(line); m != "" {
					t.Errorf("%s:%d uses %s", name, i+1, m)
				}
			}
		}
	}
}

// consoleDir is the console's source: what go:embed puts in the binary.
var consoleDir = os.DirFS("console")

// consoleFiles reads the console's files.
func consoleFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(consoleDir, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(consoleDir, p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAgentUploadLimitsAndTypes(t *testing.T) {
	h := startConsoleNode(t)
	img := consolePNG(t, 32, 24)

	h.upload("", "file", "a.png", img).want(t, "no token", http.StatusUnauthorized)
	h.upload("kfv_not-an-agent", "file", "a.png", img).want(t, "a visitor's token", http.StatusUnauthorized)

	var m consoleMedia
	h.upload(h.token, "file", `C:\fakepath\photo.png`, img).want(t, "a png", http.StatusCreated).decode(t, &m)
	if m.Type != "image/png" || m.Size != int64(len(img)) || m.Preview == "" || m.Key == "" || m.Name != "photo.png" {
		t.Fatalf("uploaded %+v", m)
	}

	// The type is sniffed, never taken from the name.
	html := []byte("<!doctype html><html><body><script>alert(1)</script></body></html>")
	if r := h.upload(h.token, "file", "innocent.png", html); r.status != http.StatusUnsupportedMediaType || r.code() != "unsupported_media_type" ||
		!strings.Contains(string(r.body), "text/html") {
		t.Fatalf("html as png: %d %s", r.status, r.body)
	}
	var txt consoleMedia
	h.upload(h.token, "file", "notes.exe", []byte("just some text\n")).want(t, "text named .exe", http.StatusCreated).decode(t, &txt)
	if txt.Type != "text/plain" || !strings.HasSuffix(txt.Key, ".txt") || txt.Preview != "" {
		t.Fatalf("text upload %+v", txt)
	}

	// Size: media.max_bytes, found while streaming.
	big := append(bytes.Repeat([]byte("a"), consoleMaxBytes), '\n')
	if r := h.upload(h.token, "file", "big.txt", big); r.status != http.StatusRequestEntityTooLarge || r.code() != "too_large" {
		t.Fatalf("over the limit: %d %s", r.status, r.body)
	}
	h.upload(h.token, "file", "max.txt", big[:consoleMaxBytes]).want(t, "at the limit", http.StatusCreated)

	// Malformed requests.
	h.upload(h.token, "file", "empty.txt", nil).want(t, "empty file", http.StatusBadRequest)
	h.upload(h.token, "attachment", "a.png", img).want(t, "no file part", http.StatusBadRequest)
	h.do("POST", "/api/v1/uploads", h.token, "image/png", img).want(t, "raw body", http.StatusUnsupportedMediaType)
	h.do("GET", "/api/v1/uploads", h.token, "", nil).want(t, "GET", http.StatusMethodNotAllowed)
}

func TestAgentMediaIsForAgentsOnly(t *testing.T) {
	h := startConsoleNode(t)
	img := consolePNG(t, 40, 30)
	var m consoleMedia
	h.upload(h.token, "file", "photo.png", img).want(t, "upload", http.StatusCreated).decode(t, &m)

	r := h.do("GET", "/api/v1/media/"+m.Key, h.token, "", nil).want(t, "download", http.StatusOK)
	if !bytes.Equal(r.body, img) {
		t.Fatal("downloaded bytes differ")
	}
	for k, want := range map[string]string{
		"Content-Type": "image/png", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("download %s = %q, want %q", k, got, want)
		}
	}
	if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
		t.Errorf("download Content-Disposition %q", cd)
	}
	p := h.do("GET", "/api/v1/media/"+m.Key+"/preview", h.token, "", nil).want(t, "preview", http.StatusOK)
	if p.header.Get("Content-Type") != "image/jpeg" || p.header.Get("Content-Disposition") != "inline" ||
		p.header.Get("X-Content-Type-Options") != "nosniff" || !bytes.HasPrefix(p.body, []byte{0xff, 0xd8}) {
		t.Errorf("preview: %v %d bytes", p.header, len(p.body))
	}

	// A visitor of the widget, with a real visitor token, is not an agent.
	var sess struct{ Token string }
	h.do("POST", "/api/v1/visitor/session", "", "application/json", "{}").want(t, "visitor session", http.StatusOK).decode(t, &sess)
	if !strings.HasPrefix(sess.Token, "kfv_") {
		t.Fatalf("visitor token %q", sess.Token)
	}
	for _, path := range []string{"/api/v1/media/" + m.Key, "/api/v1/media/" + m.Key + "/preview"} {
		for who, tok := range map[string]string{"nobody": "", "a visitor": sess.Token, "a made-up agent token": "kfa_" + strings.Repeat("A", 43)} {
			if r := h.do("GET", path, tok, "", nil); r.status != http.StatusUnauthorized || len(r.body) > 200 || bytes.Contains(r.body, img[:8]) {
				t.Errorf("%s GET %s: %d", who, path, r.status)
			}
		}
	}

	// Keys that are not keys, and keys of nothing.
	h.do("GET", "/api/v1/media/..%2f..%2fkefu.db", h.token, "", nil).want(t, "a path", http.StatusBadRequest)
	h.do("GET", "/api/v1/media/"+strings.Repeat("0", 32)+".png", h.token, "", nil).want(t, "no such file", http.StatusNotFound)
	var txt consoleMedia
	h.upload(h.token, "file", "a.txt", []byte("hello\n")).want(t, "text", http.StatusCreated).decode(t, &txt)
	h.do("GET", "/api/v1/media/"+txt.Key+"/preview", h.token, "", nil).want(t, "preview of a text file", http.StatusNotFound)
}

func TestReplyWithMediaAndTemplates(t *testing.T) {
	h := startConsoleNode(t)
	conv := h.ingest("web", "a:"+strings.Repeat("1", 32), "hello").Conversation
	img := consolePNG(t, 20, 20)
	var m consoleMedia
	h.upload(h.token, "file", "photo.png", img).want(t, "upload", http.StatusCreated).decode(t, &m)

	path := fmt.Sprintf("/api/v1/conversations/%d/messages", conv.ID)
	var sent consoleMessage
	// Type, size and preview come from storage, whatever the request says;
	// the name is sanitised again.
	h.json("POST", path, map[string]any{"client_id": "img-1", "kind": "image", "text": "the photo",
		"media": map[string]any{"key": m.Key, "name": "../../evil\u202egnp.exe", "type": "text/html", "size": 1}}).
		want(t, "image reply", http.StatusCreated).decode(t, &sent)
	if sent.Kind != "image" || sent.Text != "the photo" || sent.Media == nil || sent.Media.Key != m.Key ||
		sent.Media.Type != "image/png" || sent.Media.Size != int64(len(img)) || sent.Media.Preview != m.Preview ||
		strings.ContainsAny(sent.Media.Name, "/\u202e") {
		t.Fatalf("image reply %+v %+v", sent, sent.Media)
	}
	// A retry is the same message.
	var again consoleMessage
	h.json("POST", path, map[string]any{"client_id": "img-1", "kind": "image", "media": map[string]any{"key": m.Key}}).
		want(t, "retry", http.StatusCreated).decode(t, &again)
	if again.ID != sent.ID {
		t.Fatalf("retry stored another message: %d, %d", again.ID, sent.ID)
	}
	// A note with a file.
	var txt consoleMedia
	h.upload(h.token, "file", "log.txt", []byte("stack trace\n")).want(t, "upload", http.StatusCreated).decode(t, &txt)
	var note consoleMessage
	h.json("POST", fmt.Sprintf("/api/v1/conversations/%d/notes", conv.ID),
		map[string]any{"client_id": "note-1", "kind": "file", "media": map[string]any{"key": txt.Key, "name": "log.txt"}}).
		want(t, "file note", http.StatusCreated).decode(t, &note)
	if note.Kind != "file" || note.Visibility != "internal" || note.Media.Type != "text/plain" || note.Media.Name != "log.txt" {
		t.Fatalf("file note %+v", note)
	}

	for name, body := range map[string]map[string]any{
		"image that is text":     {"client_id": "b1", "kind": "image", "media": map[string]any{"key": txt.Key}},
		"unknown key":            {"client_id": "b2", "kind": "file", "media": map[string]any{"key": strings.Repeat("a", 32) + ".png"}},
		"preview key":            {"client_id": "b3", "kind": "image", "media": map[string]any{"key": m.Preview}},
		"path as key":            {"client_id": "b4", "kind": "file", "media": map[string]any{"key": "../../kefu.db"}},
		"file without media":     {"client_id": "b5", "kind": "file"},
		"text with media":        {"client_id": "b6", "text": "x", "media": map[string]any{"key": m.Key}},
		"unknown kind":           {"client_id": "b7", "kind": "sticker", "text": "x"},
		"template without name":  {"client_id": "b8", "kind": "template"},
		"template with text":     {"client_id": "b9", "kind": "template", "template": "reopen", "text": "x"},
		"template on a web chat": {"client_id": "b10", "kind": "template", "template": "reopen"},
	} {
		h.json("POST", path, body).want(t, name, http.StatusBadRequest)
	}

	// The web channel has no templates; the WhatsApp one lists its own.
	var list struct{ Templates []string }
	h.json("GET", fmt.Sprintf("/api/v1/conversations/%d/templates", conv.ID), nil).want(t, "web templates", http.StatusOK).decode(t, &list)
	if list.Templates == nil || len(list.Templates) != 0 {
		t.Fatalf("web templates %v", list.Templates)
	}
	wa := h.ingest("wa", "15550001111", "hi from WhatsApp").Conversation
	h.json("GET", fmt.Sprintf("/api/v1/conversations/%d/templates", wa.ID), nil).want(t, "wa templates", http.StatusOK).decode(t, &list)
	if strings.Join(list.Templates, ",") != "followup,reopen" {
		t.Fatalf("whatsapp templates %v", list.Templates)
	}
	h.json("GET", "/api/v1/conversations/999999/templates", nil).want(t, "no such conversation", http.StatusNotFound)
	var tm consoleMessage
	h.json("POST", fmt.Sprintf("/api/v1/conversations/%d/messages", wa.ID),
		map[string]any{"client_id": "t1", "kind": "template", "template": "reopen"}).want(t, "template", http.StatusCreated).decode(t, &tm)
	if tm.Kind != "template" || tm.Text != "reopen" {
		t.Fatalf("template message %+v", tm)
	}
	h.json("POST", fmt.Sprintf("/api/v1/conversations/%d/notes", wa.ID),
		map[string]any{"client_id": "t2", "kind": "template", "template": "reopen"}).want(t, "template note", http.StatusBadRequest)
}

func TestConversationUnreadAndWindow(t *testing.T) {
	h := startConsoleNode(t)
	get := func(id int64) consoleConversation {
		t.Helper()
		var c consoleConversation
		h.json("GET", fmt.Sprintf("/api/v1/conversations/%d", id), nil).want(t, "get", http.StatusOK).decode(t, &c)
		return c
	}
	from := "a:" + strings.Repeat("2", 32)
	conv := h.ingest("web", from, "one").Conversation
	h.ingest("web", from, "two")
	if c := get(conv.ID); c.Unread != 2 || c.WindowEnds != nil {
		t.Fatalf("after two messages: %+v", c)
	}
	// A note does not answer the customer.
	h.json("POST", fmt.Sprintf("/api/v1/conversations/%d/notes", conv.ID), map[string]any{"client_id": "n1", "text": "hmm"}).
		want(t, "note", http.StatusCreated)
	var page struct {
		Conversations []consoleConversation
	}
	h.json("GET", "/api/v1/conversations?status=open,pending", nil).want(t, "list", http.StatusOK).decode(t, &page)
	if len(page.Conversations) != 1 || page.Conversations[0].Unread != 2 {
		t.Fatalf("list: %+v", page.Conversations)
	}
	// The read marker clears them.
	h.json("POST", fmt.Sprintf("/api/v1/conversations/%d/read", conv.ID), map[string]any{"seq": 3}).want(t, "read", http.StatusNoContent)
	if c := get(conv.ID); c.Unread != 0 {
		t.Fatalf("after the read marker: %+v", c)
	}
	h.ingest("web", from, "three")
	if c := get(conv.ID); c.Unread != 1 {
		t.Fatalf("after a third message: %+v", c)
	}
	// So does a reply.
	h.json("POST", fmt.Sprintf("/api/v1/conversations/%d/messages", conv.ID), map[string]any{"client_id": "r1", "text": "hi"}).
		want(t, "reply", http.StatusCreated)
	if c := get(conv.ID); c.Unread != 0 {
		t.Fatalf("after a reply: %+v", c)
	}
	h.ingest("web", from, "four")
	h.ingest("web", from, "five")
	if c := get(conv.ID); c.Unread != 2 {
		t.Fatalf("after two more: %+v", c)
	}

	// WhatsApp's 24-hour window runs from the customer's last message.
	wa := h.ingest("wa", "15550002222", "hola").Conversation
	c := get(wa.ID)
	if c.WindowEnds == nil || c.LastIn == nil || !c.WindowEnds.Equal(c.LastIn.Add(24*time.Hour)) {
		t.Fatalf("whatsapp window: %+v", c)
	}
}

// Browsers write a quote in a file name as %22 in the multipart body (and
// CR, LF as %0D, %0A): the name is stored as the user saw it.
func TestUploadNameAsTheBrowserEscapesIt(t *testing.T) {
	h := startConsoleNode(t)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	hdr := textproto.MIMEHeader{}
	hdr.Set("Content-Disposition", `form-data; name="file"; filename="invoice %22March%22%0A.txt"`)
	hdr.Set("Content-Type", "text/plain")
	fw, err := mw.CreatePart(hdr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write([]byte("March invoice\n"))
	_ = mw.Close()
	var m consoleMedia
	h.do("POST", "/api/v1/uploads", h.token, mw.FormDataContentType(), buf.Bytes()).want(t, "upload", http.StatusCreated).decode(t, &m)
	if m.Name != `invoice "March".txt` {
		t.Fatalf("stored name %q, want %q", m.Name, `invoice "March".txt`)
	}
}
