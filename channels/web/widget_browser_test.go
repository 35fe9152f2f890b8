package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kefuhq/kefu/channels/web/webtest"
)

// A smoke test of the widget alone in a real browser (Debian's Chromium,
// driven by chromedp): the demo page with the one-tag widget, against a
// real node, with the agent's side played by a protocol client. The
// console's own browser test drives both sides.

// widgetChromium returns the Chromium to drive, or skips the test when
// there is none (a failure under KEFU_REQUIRE_SERVICES=1, as in CI, which
// installs it).
func widgetChromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("KEFU_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("KEFU_REQUIRE_SERVICES") == "1" {
		t.Fatal("Chromium not found (apt-get install -y chromium, or set KEFU_CHROMIUM)")
	}
	t.Skip("Chromium not found: apt-get install -y chromium (or set KEFU_CHROMIUM) to run the widget's browser test")
	return ""
}

func widgetBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := widgetChromium(t)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("window-size", "1200,900"),
		chromedp.Flag("lang", "en-US"),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// wsel is the JS path of the widget element with this data-testid (the
// widget lives in a shadow root).
func wsel(testid string) chromedp.JSPath {
	return chromedp.JSPath(`document.querySelector("#kefu-widget").shadowRoot.querySelector('[data-testid="` + testid + `"]')`)
}

// wjs is a JS expression over the widget's shadow root, bound as w.
func wjs(expr string) string {
	return `(() => { const host = document.querySelector("#kefu-widget"); const w = host && host.shadowRoot; if (!w) return false; return (` + expr + `); })()`
}

func wpoll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	defer func(at time.Time) { t.Logf("%s: %v", what, time.Since(at)) }(time.Now())
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](wjs(expr), chromedp.WithPollingTimeout(vmWait), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](wjs(`w.querySelector('[data-testid="kefu-messages"]').outerHTML + " state=" + host.dataset.state`)))
		t.Fatalf("waiting for %s: %v\nwidget: %s", what, err, html)
	}
}

func wdo(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func TestWidgetInABrowser(t *testing.T) {
	ctx := widgetBrowser(t)
	n := startMediaNode(t)
	zero := int64(0)
	agent, err := n.cl.DialAgent(context.Background(), n.agentToken(), &zero, false, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if _, _, err := agent.Sync(vmWait); err != nil {
		t.Fatal(err)
	}

	// The demo page: the launcher opens the panel; a message with markup
	// in it is sent, and shown as the text it is.
	evil := `<img src=x onerror="window.__kefuXSS=1"><script>window.__kefuXSS=2</script> hello`
	wdo(t, ctx, chromedp.Navigate(n.URL+"/demo?lang=en"))
	wpoll(t, ctx, "the WebSocket", `host.dataset.state === "ws"`)
	wdo(t, ctx,
		chromedp.Click(wsel("kefu-launcher")),
		chromedp.WaitVisible(wsel("kefu-panel")),
		chromedp.SendKeys(wsel("kefu-input"), evil),
		chromedp.Click(wsel("kefu-send")),
	)
	wpoll(t, ctx, "the ack", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="contact"] [data-testid="kefu-status"]')].some(s => s.dataset.status === "sent" || s.dataset.status === "delivered")`)
	inert, err := chromedp.Run(ctx, chromedp.Evaluate[bool](wjs(
		`w.querySelector('[data-testid="kefu-message"][data-sender="contact"] [data-testid="kefu-text"]').textContent === `+jsString(evil)+
			` && w.querySelectorAll('[data-testid="kefu-messages"] script, [data-testid="kefu-messages"] img').length === 0 && window.__kefuXSS === undefined`)))
	if err != nil || !inert {
		t.Fatalf("the message was not rendered as plain text (%v)", err)
	}
	f, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == evil })
	if err != nil {
		t.Fatal(err)
	}
	conv := f.Message.ConversationID
	// The conversation's number shows, as agents see it.
	wpoll(t, ctx, "the conversation's number", fmt.Sprintf(`w.querySelector('[data-testid="kefu-number"]').textContent === "#%d" && !w.querySelector('[data-testid="kefu-number"]').hidden`, conv))

	// The agent types and answers: the widget shows both, with the agent's
	// name, and reports the answer read (the panel is open).
	if err := agent.Send(map[string]any{"type": "typing", "conversation_id": conv, "on": true}); err != nil {
		t.Fatal(err)
	}
	wpoll(t, ctx, "the typing indicator", `!w.querySelector('[data-testid="kefu-typing"]').hidden && w.querySelector('[data-testid="kefu-typing"]').textContent.includes("Alice")`)
	reply := sendRaw(t, agent, "r-1", map[string]any{"type": "send", "id": "r-1", "conversation_id": conv, "text": "Hello from Alice"})
	wpoll(t, ctx, "the reply", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"]')].some(m => m.textContent.includes("Hello from Alice"))`)
	wpoll(t, ctx, "the agent's name", `w.querySelector('[data-testid="kefu-agent"]').textContent === "Alice" && w.querySelector('[data-testid="kefu-typing"]').hidden`)
	if _, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool {
		return f.Type == "receipt" && f.By == "contact" && f.Status == "read" && f.Seq >= reply.Message.Seq
	}); err != nil {
		t.Fatalf("no read receipt from the widget: %v", err)
	}
	// The agent reads the visitor's message: the widget shows it read.
	if err := agent.Send(map[string]any{"type": "receipt", "conversation_id": conv, "seq": reply.Message.Seq, "status": "read"}); err != nil {
		t.Fatal(err)
	}
	wpoll(t, ctx, "the read status", `w.querySelector('[data-testid="kefu-message"][data-sender="contact"] [data-testid="kefu-status"]').dataset.status === "read"`)

	// An image: picked, uploaded, sent; the agent gets it with its media.
	img := filepath.Join(t.TempDir(), "cat.png")
	if err := os.WriteFile(img, testPNG(t), 0o600); err != nil {
		t.Fatal(err)
	}
	wdo(t, ctx, chromedp.SetUploadFiles(wsel("kefu-file-input"), []string{img}))
	wpoll(t, ctx, "the image sent", `[...w.querySelectorAll('[data-testid="kefu-message"][data-kind="image"][data-id]')].some(m => m.querySelector('[data-testid="kefu-image"]').dataset.loaded === "true")`)
	f, err = agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Kind == "image" })
	if err != nil {
		t.Fatal(err)
	}
	_, media := mediaOf(t, f)
	if media.Type != "image/png" || media.Name != "cat.png" {
		t.Fatalf("the agent got %+v", media)
	}

	// The agent sends the image back: the widget fetches it with its token.
	sendRaw(t, agent, "r-2", map[string]any{"type": "send", "id": "r-2", "conversation_id": conv, "kind": "image",
		"media": map[string]string{"key": media.Key, "name": "back.png"}})
	wpoll(t, ctx, "the agent's image", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"][data-kind="image"] [data-testid="kefu-image"]')].some(i => i.dataset.loaded === "true" && i.src.startsWith("blob:"))`)
	saveWidgetScreenshot(t, ctx, "widget.png")

	// A reload keeps the conversation (history) and the session.
	wdo(t, ctx, chromedp.Reload())
	wpoll(t, ctx, "the history", `host.dataset.state === "ws" && w.querySelectorAll('[data-testid="kefu-message"][data-id]').length >= 5`)

	// Long polling only: same session, messages both ways.
	wdo(t, ctx, chromedp.Navigate(n.URL+"/demo?lang=zh&transport=poll"))
	wpoll(t, ctx, "long polling", `host.dataset.state === "poll" && host.dataset.lang === "zh"`)
	wdo(t, ctx,
		chromedp.Click(wsel("kefu-launcher")),
		chromedp.SendKeys(wsel("kefu-input"), "你好，长轮询"),
		chromedp.Click(wsel("kefu-send")),
	)
	if _, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "你好，长轮询" }); err != nil {
		t.Fatal(err)
	}
	wpoll(t, ctx, "the ack by polling", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="contact"]')].some(m => m.textContent.includes("长轮询") && m.querySelector('[data-testid="kefu-status"]').dataset.status !== "sending")`)
	sendRaw(t, agent, "r-3", map[string]any{"type": "send", "id": "r-3", "conversation_id": conv, "text": "收到"})
	wpoll(t, ctx, "the reply by polling", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"] [data-testid="kefu-text"]')].some(e => e.textContent === "收到")`)
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// saveWidgetScreenshot keeps a screenshot when KEFU_TEST_ARTIFACTS names a
// folder.
func saveWidgetScreenshot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("KEFU_TEST_ARTIFACTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), png, 0o644)
	}
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
	}
}

// wagent connects the agent Alice over WebSocket, from the first message.
func wagent(t *testing.T, n *vmNode) *webtest.Conn {
	t.Helper()
	zero := int64(0)
	agent, err := n.cl.DialAgent(context.Background(), n.agentToken(), &zero, false, webtest.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Close() })
	if _, _, err := agent.Sync(vmWait); err != nil {
		t.Fatal(err)
	}
	return agent
}

func TestWidgetFallsBackToLongPollingWhenWebSocketsAreBlocked(t *testing.T) {
	ctx := widgetBrowser(t)
	n := startMediaNode(t)
	agent := wagent(t, n)
	// A proxy that refuses WebSocket handshakes, as some networks do.
	target, _ := url.Parse(n.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // the long poll cut at the end
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "no websockets here", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer func() { proxy.CloseClientConnections(); proxy.Close() }() // a long poll may be waiting

	wdo(t, ctx, chromedp.Navigate(proxy.URL+"/demo"))
	wpoll(t, ctx, "long polling", `host.dataset.state === "poll"`)
	wdo(t, ctx,
		chromedp.Click(wsel("kefu-launcher")),
		chromedp.SendKeys(wsel("kefu-input"), "through the proxy"),
		chromedp.Click(wsel("kefu-send")),
	)
	f, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "through the proxy" })
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, agent, "r-1", map[string]any{"type": "send", "id": "r-1", "conversation_id": f.Message.ConversationID, "text": "heard you"})
	wpoll(t, ctx, "the reply by polling", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"] [data-testid="kefu-text"]')].some(e => e.textContent === "heard you")`)
}

// wfirst opens the demo page at base, waits for the WebSocket, and sends
// "first" from the widget until it is acknowledged (the visitor's
// conversation begins).
func wfirst(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	wdo(t, ctx, chromedp.Navigate(base+"/demo"))
	wpoll(t, ctx, "the WebSocket", `host.dataset.state === "ws"`)
	wdo(t, ctx,
		chromedp.Click(wsel("kefu-launcher")),
		chromedp.SendKeys(wsel("kefu-input"), "first"),
		chromedp.Click(wsel("kefu-send")),
	)
	wpoll(t, ctx, "the ack", `w.querySelector('[data-testid="kefu-message"][data-sender="contact"][data-id]') !== null`)
}

// dropProxy passes TCP connections through to a node and can cut them all,
// or refuse new ones while blocked (the server out of reach).
type dropProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn
	blocked atomic.Bool
}

func newDropProxy(t *testing.T, to string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.drop() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.blocked.Load() {
				c.Close()
				continue
			}
			b, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
	return p
}

func (p *dropProxy) url() string { return "http://" + p.ln.Addr().String() }

// drop cuts every connection, as a network change does.
func (p *dropProxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestWidgetReconnectsAndResumes(t *testing.T) {
	ctx := widgetBrowser(t)
	n := startMediaNode(t)
	agent := wagent(t, n)
	target, _ := url.Parse(n.URL)
	p := newDropProxy(t, target.Host)

	wfirst(t, ctx, p.url())
	f, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "first" })
	if err != nil {
		t.Fatal(err)
	}
	conv := f.Message.ConversationID

	// The network drops; the agent answers meanwhile; the widget comes
	// back by itself and gets exactly what it missed.
	p.drop()
	wpoll(t, ctx, "the drop to be noticed", `host.dataset.state !== "ws"`)
	sendRaw(t, agent, "r-1", map[string]any{"type": "send", "id": "r-1", "conversation_id": conv, "text": "while you were away"})
	wpoll(t, ctx, "the missed reply", `host.dataset.state === "ws" && [...w.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"] [data-testid="kefu-text"]')].filter(e => e.textContent === "while you were away").length === 1`)
	sendRaw(t, agent, "r-2", map[string]any{"type": "send", "id": "r-2", "conversation_id": conv, "text": "and after"})
	wpoll(t, ctx, "the live reply", `[...w.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"]')].length === 2`)
}

// A message written while the server is out of reach, shown as sending,
// still goes when the customer comes back after leaving the page: the
// widget keeps it in localStorage, and the server stores its id once.
func TestWidgetKeepsAnUnsentMessageAcrossPages(t *testing.T) {
	ctx := widgetBrowser(t)
	n := startMediaNode(t)
	agent := wagent(t, n)
	target, _ := url.Parse(n.URL)
	p := newDropProxy(t, target.Host)

	wfirst(t, ctx, p.url())

	p.blocked.Store(true)
	p.drop()
	wpoll(t, ctx, "the drop to be noticed", `host.dataset.state !== "ws"`)
	wdo(t, ctx,
		chromedp.SendKeys(wsel("kefu-input"), "my address is 5 Main St"),
		chromedp.Click(wsel("kefu-send")),
	)
	wpoll(t, ctx, "the message shown as sending", `[...w.querySelectorAll('[data-testid="kefu-message"][data-client-id] [data-testid="kefu-text"]')].some(e => e.textContent === "my address is 5 Main St")`)
	wdo(t, ctx, chromedp.Navigate("about:blank"))

	p.blocked.Store(false)
	wdo(t, ctx, chromedp.Navigate(p.url()+"/demo"))
	if _, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Text == "my address is 5 Main St" }); err != nil {
		t.Fatalf("the message written while away did not arrive: %v", err)
	}
	wpoll(t, ctx, "it shown once, stored", `[...w.querySelectorAll('[data-testid="kefu-message"] [data-testid="kefu-text"]')].filter(e => e.textContent === "my address is 5 Main St").length === 1 && w.querySelector('[data-testid="kefu-message"][data-client-id]:not([data-id])') === null`)
}

// Over long polling, messages written quickly are stored in the order
// they were written, even when the first one's request is slow: the
// widget sends one POST at a time (two in flight may overtake each other).
func TestWidgetLongPollKeepsTheOrder(t *testing.T) {
	ctx := widgetBrowser(t)
	n := startMediaNode(t)
	agent := wagent(t, n)
	target, _ := url.Parse(n.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var slowed atomic.Bool
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/lp/visitor" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if strings.Contains(string(body), `"line 2"`) && !slowed.Swap(true) {
				time.Sleep(700 * time.Millisecond) // line 2's request is slow the first time
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)

	wdo(t, ctx, chromedp.Navigate(slow.URL+"/demo?transport=poll"))
	wpoll(t, ctx, "polling", `host.dataset.state === "poll"`)
	wdo(t, ctx, chromedp.Click(wsel("kefu-launcher")))
	for _, text := range []string{"line 1", "line 2", "line 3"} {
		wdo(t, ctx, chromedp.SendKeys(wsel("kefu-input"), text), chromedp.Click(wsel("kefu-send")))
		if text == "line 1" {
			wpoll(t, ctx, "the first ack", `w.querySelector('[data-testid="kefu-message"][data-sender="contact"][data-id]') !== null`)
		}
	}
	var got []string
	for len(got) < 3 {
		f, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool {
			return f.Type == "message" && f.Message.SenderKind == "contact" && strings.HasPrefix(f.Message.Text, "line ")
		})
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, f.Message.Text)
	}
	if fmt.Sprint(got) != "[line 1 line 2 line 3]" {
		t.Fatalf("stored in the order %q", got)
	}
}

// An upload that failed (the server out of reach) is done again when the
// customer taps "Not sent · retry", and the image goes out.
func TestWidgetRetriesAFailedUpload(t *testing.T) {
	ctx := widgetBrowser(t)
	n := startMediaNode(t)
	agent := wagent(t, n)
	target, _ := url.Parse(n.URL)
	p := newDropProxy(t, target.Host)

	wfirst(t, ctx, p.url())

	p.blocked.Store(true)
	p.drop()
	img := filepath.Join(t.TempDir(), "cat.png")
	if err := os.WriteFile(img, testPNG(t), 0o600); err != nil {
		t.Fatal(err)
	}
	wdo(t, ctx, chromedp.SetUploadFiles(wsel("kefu-file-input"), []string{img}))
	wpoll(t, ctx, "the upload to fail", `w.querySelector('[data-testid="kefu-message"][data-kind="image"] [data-testid="kefu-status"][data-status="failed"]') !== null`)

	p.blocked.Store(false)
	status := chromedp.JSPath(`document.querySelector("#kefu-widget").shadowRoot.querySelector('[data-testid="kefu-message"][data-kind="image"] [data-testid="kefu-status"]')`)
	wdo(t, ctx, chromedp.Click(status))
	if _, err := agent.WaitFor(vmWait, func(f webtest.Frame) bool { return f.Type == "message" && f.Message.Kind == "image" }); err != nil {
		t.Fatalf("the image did not go after the retry: %v", err)
	}
}
