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
	"mime"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/node/nodetest"
)

// Visitor media end to end, on a real node (nodetest keeps the store and
// media under the test's temporary directory): uploads with their limits,
// authorised downloads, and image and file messages over the protocol.

const (
	vmOrigin   = "https://shop.example.com"
	vmMaxBytes = 64 << 10
	vmWait     = 10 * time.Second
)

type vmNode struct {
	*nodetest.Node
	t  *testing.T
	cl *webtest.Client
}

func startMediaNode(t *testing.T) *vmNode {
	t.Helper()
	return startMediaNodeLimits(t, "requests_per_minute: 10000, messages_per_minute: 10000, conversations_per_hour: 10000")
}

// startMediaNodeLimits is startMediaNode with the web channel's limits.
func startMediaNodeLimits(t *testing.T, limits string) *vmNode {
	t.Helper()
	return startMediaNodeAs(t, web.Type, limits)
}

// startMediaNodeAs is startMediaNodeLimits with the web channel's type
// (web.APITestType to reach the instance).
func startMediaNodeAs(t *testing.T, typ, limits string) *vmNode {
	t.Helper()
	n := nodetest.Start(t, `
media: {max_bytes: 65536}
routing: {offline_reply: ""}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password}
channels:
  web:
    type: `+typ+`
    enabled: true
    allowed_origins: ["`+vmOrigin+`"]
    limits: {`+limits+`}
`)
	return &vmNode{Node: n, t: t, cl: &webtest.Client{Base: n.URL, Origin: vmOrigin}}
}

func (n *vmNode) visitor(name string) *webtest.Session {
	n.t.Helper()
	s, err := n.cl.StartSession(context.Background(), webtest.SessionRequest{Name: name})
	if err != nil {
		n.t.Fatal(err)
	}
	return s
}

func (n *vmNode) agentToken() string {
	n.t.Helper()
	a := n.Agent(n.t, "alice@example.com")
	tok, err := web.NewAgentSession(context.Background(), n.Service().Store(), a.ID, time.Now().Add(time.Hour))
	if err != nil {
		n.t.Fatal(err)
	}
	return tok
}

// mediaFiles counts the files in the node's media folder.
func (n *vmNode) mediaFiles() int {
	n.t.Helper()
	count := 0
	err := filepath.WalkDir(n.Config.Media.Dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			count++
		}
		return err
	})
	if err != nil && !strings.Contains(err.Error(), "no such file") {
		n.t.Fatal(err)
	}
	return count
}

type vmAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a vmAnswer) errorCode() string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

// do sends a request to the node as a browser page on vmOrigin would.
func (n *vmNode) do(method, path, token, ctype string, body []byte, origin string) vmAnswer {
	n.t.Helper()
	req, err := http.NewRequest(method, n.URL+path, bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	return vmAnswer{status: resp.StatusCode, header: resp.Header, body: b}
}

// multipartFile is a multipart body holding file under the field name.
func multipartFile(t *testing.T, field, name string, file []byte) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if err := mw.WriteField("note", "ignored"); err != nil {
		t.Fatal(err)
	}
	w, err := mw.CreateFormFile(field, name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(file)
	mw.Close()
	return mw.FormDataContentType(), b.Bytes()
}

type vmMedia struct {
	Key     string `json:"key"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Size    int64  `json:"size"`
	Preview string `json:"preview"`
}

func (n *vmNode) upload(token, name string, file []byte) vmMedia {
	n.t.Helper()
	ct, body := multipartFile(n.t, "file", name, file)
	a := n.do("POST", "/api/v1/visitor/uploads", token, ct, body, vmOrigin)
	if a.status != http.StatusCreated {
		n.t.Fatalf("upload %s: %d %s", name, a.status, a.body)
	}
	var m vmMedia
	if err := json.Unmarshal(a.body, &m); err != nil {
		n.t.Fatal(err)
	}
	return m
}

func testPNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for x := range 40 {
		for y := range 30 {
			img.Set(x, y, color.RGBA{uint8(6 * x), uint8(8 * y), 200, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestVisitorUploadRefusesWhatItMustAndStoresNothing(t *testing.T) {
	n := startMediaNode(t)
	s := n.visitor("Zhang")
	big := bytes.Repeat([]byte("a line of text\n"), vmMaxBytes/15+10)
	script := []byte("<!DOCTYPE html><html><script>alert(document.cookie)</script></html>")
	svg := []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="1" height="1"/></svg>`)
	for _, tc := range []struct {
		name   string
		token  string
		ctype  string
		body   []byte
		status int
		code   string
	}{
		{"no token", "", "", []byte("hello"), 401, "unauthorized"},
		{"forged token", "kfv_eyJ9.AAAA", "", []byte("hello"), 401, "unauthorized"},
		{"over the limit, multipart", s.Token, "multipart", big, 413, "too_large"},
		{"over the limit, raw body", s.Token, "text/plain", big, 413, "too_large"},
		{"a script named .png", s.Token, "multipart", script, 415, "unsupported_media_type"},
		{"an SVG with script", s.Token, "multipart", svg, 415, "unsupported_media_type"},
		{"an empty file", s.Token, "multipart", nil, 400, "bad_request"},
		{"no file field", s.Token, "nofile", []byte("hello"), 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctype, body := tc.ctype, tc.body
			switch ctype {
			case "multipart":
				ctype, body = multipartFile(t, "file", "cat.png", tc.body)
			case "nofile":
				ctype, body = multipartFile(t, "attachment", "cat.png", tc.body)
			}
			a := n.do("POST", "/api/v1/visitor/uploads", tc.token, ctype, body, vmOrigin)
			if a.status != tc.status || a.errorCode() != tc.code {
				t.Fatalf("got %d %s, want %d %s", a.status, a.body, tc.status, tc.code)
			}
			if got := n.mediaFiles(); got != 0 {
				t.Fatalf("%d files stored after a refused upload", got)
			}
		})
	}

	// A good one is stored, under a sniffed type and a sanitised name (which,
	// ending in .exe, gets the real type's extension too).
	m := n.upload(s.Token, "../../x/猫\u202egnp.exe", testPNG(t))
	if m.Type != "image/png" || !strings.HasSuffix(m.Key, ".png") || m.Preview == "" || m.Name != "猫gnp.exe.png" {
		t.Fatalf("stored %+v", m)
	}
	// Raw bodies work too, named by ?name=.
	a := n.do("POST", "/api/v1/visitor/uploads?name=notes.txt", s.Token, "application/octet-stream", []byte("order #123\n"), vmOrigin)
	if a.status != http.StatusCreated || !strings.Contains(string(a.body), `"type":"text/plain"`) || !strings.Contains(string(a.body), `"name":"notes.txt"`) {
		t.Fatalf("raw upload: %d %s", a.status, a.body)
	}
	// A page from an origin that is not allowed is refused before anything.
	ct, body := multipartFile(t, "file", "cat.png", testPNG(t))
	if a := n.do("POST", "/api/v1/visitor/uploads", s.Token, ct, body, "https://evil.example.net"); a.status != http.StatusForbidden {
		t.Fatalf("foreign origin: %d %s", a.status, a.body)
	}
	// And the browser's preflight is answered.
	pre := n.do("OPTIONS", "/api/v1/visitor/uploads", "", "", nil, vmOrigin)
	if pre.status != http.StatusNoContent || pre.header.Get("Access-Control-Allow-Origin") != vmOrigin ||
		!strings.Contains(pre.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", pre.status, pre.header)
	}
}

func TestVisitorDownloadsOnlyTheirOwnFiles(t *testing.T) {
	n := startMediaNode(t)
	owner, other := n.visitor("Owner"), n.visitor("Other")
	file := testPNG(t)
	m := n.upload(owner.Token, "receipt photo.png", file)
	path := "/api/v1/visitor/media/" + m.Key

	a := n.do("GET", path, owner.Token, "", nil, vmOrigin)
	if a.status != http.StatusOK || !bytes.Equal(a.body, file) {
		t.Fatalf("owner: %d (%d bytes)", a.status, len(a.body))
	}
	h := a.header
	if h.Get("Content-Type") != "image/png" || h.Get("X-Content-Type-Options") != "nosniff" ||
		disposition(h) != "attachment receipt photo.png" ||
		!strings.Contains(h.Get("Content-Security-Policy"), "sandbox") || h.Get("Access-Control-Allow-Origin") != vmOrigin {
		t.Fatalf("owner's headers: %v", h)
	}
	p := n.do("GET", path+"?preview=1", owner.Token, "", nil, vmOrigin)
	if p.status != http.StatusOK || p.header.Get("Content-Type") != "image/jpeg" || p.header.Get("X-Content-Type-Options") != "nosniff" ||
		!strings.HasPrefix(p.header.Get("Content-Disposition"), "inline") || !bytes.HasPrefix(p.body, []byte{0xff, 0xd8}) {
		t.Fatalf("preview: %d %v", p.status, p.header)
	}

	for _, tc := range []struct {
		name, path, token string
		status            int
	}{
		{"another visitor", path, other.Token, 404},
		{"another visitor's preview", path + "?preview=1", other.Token, 404},
		{"another visitor naming a message", path + "?message_id=1", other.Token, 404},
		{"no token", path, "", 401},
		{"a forged token", path, owner.Token + "x", 401},
		{"a key nobody uploaded", "/api/v1/visitor/media/0123456789abcdef0123456789abcdef.png", owner.Token, 404},
		{"the preview key itself", "/api/v1/visitor/media/" + m.Preview, owner.Token, 404},
		{"a path", "/api/v1/visitor/media/..%2F..%2Fkefu.db", owner.Token, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := n.do("GET", tc.path, tc.token, "", nil, vmOrigin)
			if a.status != tc.status || bytes.Equal(a.body, file) {
				t.Fatalf("got %d %s, want %d", a.status, a.body, tc.status)
			}
		})
	}
}

// sendRaw sends a frame over a WebSocket and returns the ack or error
// that answers it.
func sendRaw(t *testing.T, c *webtest.Conn, id string, frame any) webtest.Frame {
	t.Helper()
	if err := c.Send(frame); err != nil {
		t.Fatal(err)
	}
	f, err := c.WaitFor(vmWait, func(f webtest.Frame) bool { return (f.Type == "ack" || f.Type == "error") && f.ID == id })
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// mediaOf decodes the media of a message or ack frame.
func mediaOf(t *testing.T, f webtest.Frame) (kind string, m vmMedia) {
	t.Helper()
	var raw struct {
		Message struct {
			Kind  string   `json:"kind"`
			Media *vmMedia `json:"media"`
		} `json:"message"`
	}
	if err := json.Unmarshal(f.Raw, &raw); err != nil || raw.Message.Media == nil {
		t.Fatalf("no media in %s", f.Raw)
	}
	return raw.Message.Kind, *raw.Message.Media
}

func TestImageMessageRoundTrip(t *testing.T) {
	n := startMediaNode(t)
	ctx := context.Background()
	s, stranger := n.visitor("Zhang"), n.visitor("Stranger")
	zero := int64(0)
	agent, err := n.cl.DialAgent(ctx, n.agentToken(), &zero, false, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if _, _, err := agent.Sync(vmWait); err != nil {
		t.Fatal(err)
	}
	vis, err := n.cl.DialVisitor(ctx, s.Token, webtest.Cursor{}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer vis.Close()
	if _, _, err := vis.Sync(vmWait); err != nil {
		t.Fatal(err)
	}

	// The visitor uploads an image and sends it.
	up := n.upload(s.Token, "cat.png", testPNG(t))
	ack := sendRaw(t, vis, "img-1", map[string]any{"type": "send", "id": "img-1", "kind": "image",
		"media": map[string]string{"key": up.Key, "name": "my cat.png"}})
	if ack.Type != "ack" {
		t.Fatalf("send image: %s", ack.Raw)
	}
	if kind, m := mediaOf(t, ack); kind != "image" || m.Key != up.Key || m.Type != "image/png" || m.Size != up.Size || m.Name != "my cat.png" {
		t.Fatalf("acked %s %+v", kind, m)
	}
	msgID := ack.Message.ID

	// The agent receives it, with the media reference and its preview.
	f, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.ID == msgID })
	if err != nil {
		t.Fatal(err)
	}
	if kind, m := mediaOf(t, f); kind != "image" || m.Key != up.Key || m.Type != "image/png" || m.Preview != up.Preview {
		t.Fatalf("agent got %s %+v", kind, m)
	}
	stored := n.Messages(t, f.Message.ConversationID)
	for _, m := range stored {
		if m.ID == msgID && (m.Kind != "image" || m.Media == nil || m.Media.Key != up.Key || m.Media.Preview != up.Preview) {
			t.Fatalf("stored %+v", m)
		}
	}

	// What may not be sent: another visitor's upload, a file as an image,
	// kinds without media.
	txt := n.upload(s.Token, "notes.txt", []byte("order #123\n"))
	strangerWS, err := n.cl.DialVisitor(ctx, stranger.Token, webtest.Cursor{}, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer strangerWS.Close()
	for i, tc := range []struct {
		name  string
		conn  *webtest.Conn
		frame map[string]any
		code  string
	}{
		{"another visitor's upload", strangerWS, map[string]any{"kind": "image", "media": map[string]string{"key": up.Key}}, "not_found"},
		{"a text file as an image", vis, map[string]any{"kind": "image", "media": map[string]string{"key": txt.Key}}, "bad_request"},
		{"image without media", vis, map[string]any{"kind": "image"}, "bad_frame"},
		{"a preview key", vis, map[string]any{"kind": "image", "media": map[string]string{"key": up.Preview}}, "not_found"},
		{"an unknown kind", vis, map[string]any{"kind": "sticker", "media": map[string]string{"key": up.Key}}, "bad_frame"},
		{"text with media", vis, map[string]any{"text": "hi", "media": map[string]string{"key": up.Key}}, "bad_frame"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "bad-" + strconv.Itoa(i)
			tc.frame["type"], tc.frame["id"] = "send", id
			if f := sendRaw(t, tc.conn, id, tc.frame); f.Type != "error" || f.Error.Code != tc.code {
				t.Fatalf("got %s, want error %s", f.Raw, tc.code)
			}
		})
	}
	if ms := n.Messages(t, f.Message.ConversationID); len(ms) != len(stored) {
		t.Fatalf("%d messages after refused sends, want %d", len(ms), len(stored))
	}

	// A file as a file, over long polling this time, with a caption.
	lp := &webtest.Poller{Client: n.cl, Token: s.Token}
	replies, err := lp.Post(ctx, map[string]any{"type": "send", "id": "file-1", "kind": "file", "text": "the receipt",
		"media": map[string]string{"key": txt.Key}})
	if err != nil || len(replies) != 1 || replies[0].Type != "ack" || replies[0].Message.Text != "the receipt" {
		t.Fatalf("send a file by long polling: %v %+v", err, replies)
	}
	if kind, m := mediaOf(t, replies[0]); kind != "file" || m.Type != "text/plain" {
		t.Fatalf("file acked as %s %+v", kind, m)
	}

	// The agent answers with the file too; the visitor downloads it through
	// the message, the stranger cannot, even naming the message.
	reply := sendRaw(t, agent, "r-1", map[string]any{"type": "send", "id": "r-1", "conversation_id": f.Message.ConversationID,
		"kind": "file", "media": map[string]string{"key": txt.Key, "name": "reply.txt"}})
	if reply.Type != "ack" {
		t.Fatalf("agent's file: %s", reply.Raw)
	}
	got, err := vis.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.ID == reply.Message.ID })
	if err != nil {
		t.Fatal(err)
	}
	if kind, m := mediaOf(t, got); kind != "file" || m.Key != txt.Key || m.Name != "reply.txt" || got.Message.SenderName != "Alice" {
		t.Fatalf("visitor got %s %+v from %q", kind, m, got.Message.SenderName)
	}
	q := "/api/v1/visitor/media/" + txt.Key + "?message_id=" + itoa(reply.Message.ID)
	if a := n.do("GET", q, s.Token, "", nil, ""); a.status != 200 || string(a.body) != "order #123\n" ||
		disposition(a.header) != "attachment reply.txt" || a.header.Get("Content-Type") != "text/plain" {
		t.Fatalf("visitor's download of the agent's file: %d %v", a.status, a.header)
	}
	if a := n.do("GET", q, stranger.Token, "", nil, ""); a.status != 404 {
		t.Fatalf("stranger's download of the agent's file: %d", a.status)
	}
	// The image the visitor sent, through its message.
	if a := n.do("GET", "/api/v1/visitor/media/"+up.Key+"?preview=1&message_id="+itoa(msgID), s.Token, "", nil, ""); a.status != 200 {
		t.Fatalf("preview through the message: %d %s", a.status, a.body)
	}
}

// disposition is a Content-Disposition's type and file name.
func disposition(h http.Header) string {
	typ, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if err != nil {
		return err.Error()
	}
	return typ + " " + params["filename"]
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestWidgetAndDemoAreServed(t *testing.T) {
	n := startMediaNode(t)
	js := n.do("GET", "/widget.js", "", "", nil, "")
	if js.status != 200 || js.header.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		js.header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(js.header.Get("Cache-Control"), "max-age=") ||
		js.header.Get("ETag") == "" || !bytes.Contains(js.body, []byte("kefu-launcher")) {
		t.Fatalf("widget.js: %d %v", js.status, js.header)
	}
	// Message text is never parsed as HTML: the widget does not use the
	// APIs that would.
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if bytes.Contains(js.body, []byte(bad)) {
			t.Errorf("widget.js uses %s", bad)
		}
	}
	req, _ := http.NewRequest("GET", n.URL+"/widget.js", nil)
	req.Header.Set("If-None-Match", js.header.Get("ETag"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation: %d", resp.StatusCode)
	}

	demo := n.do("GET", "/demo?lang=zh", "", "", nil, "")
	csp := demo.header.Get("Content-Security-Policy")
	if demo.status != 200 || !strings.HasPrefix(demo.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") ||
		!bytes.Contains(demo.body, []byte(`<script src="/widget.js" async data-lang="zh"></script>`)) ||
		!bytes.Contains(demo.body, []byte(`href="/console/"`)) || !bytes.Contains(demo.body, []byte(n.URL+"/widget.js")) {
		t.Fatalf("demo: %d %v\n%s", demo.status, demo.header, demo.body)
	}
	if css := n.do("GET", "/widget/demo.css", "", "", nil, ""); css.status != 200 || css.header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Fatalf("demo.css: %d %v", css.status, css.header)
	}
	// Only known values reach the page.
	if d := n.do("GET", `/demo?lang="><script>alert(1)</script>`, "", "", nil, ""); bytes.Contains(d.body, []byte("alert(1)")) || !bytes.Contains(d.body, []byte(`<script src="/widget.js" async></script>`)) {
		t.Fatalf("demo echoed its query:\n%s", d.body)
	}
}

// TestVisitorUploadBudgetPerAddress: an address may upload
// limits.upload_mb_per_hour megabytes an hour (each file counted in whole
// MiB); a file over what is left is refused with 429 and not kept, since
// uploads that are never sent stay on disk.
func TestVisitorUploadBudgetPerAddress(t *testing.T) {
	n := startMediaNodeLimits(t, "requests_per_minute: 10000, messages_per_minute: 10000, conversations_per_hour: 10000, upload_mb_per_hour: 2")
	for i, want := range []int{http.StatusCreated, http.StatusCreated, http.StatusTooManyRequests} {
		s := n.visitor(fmt.Sprint("v", i)) // a new identity each time: the budget is the address's
		a := n.do("POST", "/api/v1/visitor/uploads?name=notes.txt", s.Token, "application/octet-stream", []byte("order #123\n"), vmOrigin)
		if a.status != want {
			t.Fatalf("upload %d: HTTP %d %s, want %d", i+1, a.status, a.body, want)
		}
	}
	if got := n.mediaFiles(); got != 2 {
		t.Fatalf("%d files kept, want the 2 within the budget", got)
	}
}
