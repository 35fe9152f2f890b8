package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
	"github.com/kefuhq/kefu/core"
)

// The web channel in a real browser: Debian's Chromium, driven from Go by
// chromedp, against a real node. A visitor on /demo (the one-tag widget)
// writes and sends an image; an agent logged in to the console sees both
// arrive live and answers; the widget shows the answer. A message built to
// run script (<script>, <img onerror>) stays text on both sides.
//
// Chromium is looked for at /usr/bin/chromium (or $KEFU_CHROMIUM). Without
// it the test skips, unless KEFU_REQUIRE_SERVICES=1 (CI), which makes that a
// failure. Screenshots of both sides are saved to $KEFU_ARTIFACTS (or the
// test's temporary directory) and logged; docs/screenshot-console.png and
// docs/screenshot-widget.png are copies of them.

// The widget's selectors, as widget.js documents them: it lives in the open
// shadow root of #kefu-widget.
func widgetSel(testid string) string {
	return `document.querySelector("#kefu-widget").shadowRoot.querySelector('[data-testid="` + testid + `"]')`
}

const widgetRoot = `document.querySelector("#kefu-widget").shadowRoot`

// xssPayload would run script if it were ever parsed as HTML: the flag it
// sets must stay unset.
const xssPayload = `<script>window.__kefuXSS=1</script><img src=x onerror="window.__kefuXSS=2"> <b>bold?</b>`

func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("KEFU_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"}
	for _, p := range candidates {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if os.Getenv("KEFU_REQUIRE_SERVICES") == "1" {
		t.Fatal("Chromium is not installed at /usr/bin/chromium (apt-get install chromium), and KEFU_REQUIRE_SERVICES=1 requires the browser test")
	}
	t.Skip("Chromium not found at /usr/bin/chromium (apt-get install chromium, or set KEFU_CHROMIUM); skipping the browser test")
	return ""
}

// browserTab is one tab, with what its page wrote to the console.
type browserTab struct {
	t    *testing.T
	name string
	ctx  context.Context
	mu   sync.Mutex
	logs []chromedp.ConsoleMessage
}

func newTab(t *testing.T, parent context.Context, name string) *browserTab {
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	b := &browserTab{t: t, name: name, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // open the tab
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.logs = append(b.logs, m)
			b.mu.Unlock()
		}
	}()
	return b
}

func (b *browserTab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("%s: %s: %v", b.name, what, err)
	}
}

// click clicks the element expr finds, from inside the page: the
// conversation list re-renders live, so a node looked up first and clicked
// after may be gone by then.
func (b *browserTab) click(what, expr string) {
	b.t.Helper()
	b.waitFor(what, expr+" !== null")
	if v := b.eval("(" + expr + ").click(), true"); v != true {
		b.fail("%s: %s: click did not run", b.name, what)
	}
}

func (b *browserTab) eval(expr string) any {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
	if err != nil {
		b.fail("%s: evaluating %s: %v", b.name, expr, err)
	}
	return v
}

// waitFor polls the JavaScript condition expr until it is true.
func (b *browserTab) waitFor(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.fail("%s: timed out waiting for %s (last error: %v)", b.name, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fail saves a screenshot of the tab for the post-mortem, then fails.
func (b *browserTab) fail(format string, args ...any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		p := filepath.Join(artifactsDir(b.t), "failed-"+b.name+".png")
		if os.WriteFile(p, png, 0o644) == nil {
			b.t.Logf("screenshot of the %s tab: %s", b.name, p)
		}
	}
	b.mu.Lock()
	for _, m := range b.logs {
		b.t.Logf("%s console: %s", b.name, m)
	}
	b.mu.Unlock()
	b.t.Fatalf(format, args...)
}

func (b *browserTab) screenshot(file string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.fail("%s: screenshot: %v", b.name, err)
	}
	p := filepath.Join(artifactsDir(b.t), file)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", p)
}

// problems returns what the page reported that must not happen: uncaught
// exceptions and Content-Security-Policy violations.
func (b *browserTab) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.logs {
		if m.IsException() || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused to") {
			out = append(out, m.String())
		}
	}
	return out
}

var (
	artifactsMu   sync.Mutex
	artifactsDirs = map[*testing.T]string{}
)

// artifactsDir is $KEFU_ARTIFACTS, or a temporary directory of the test.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("KEFU_ARTIFACTS"); d != "" {
		_ = os.MkdirAll(d, 0o755)
		return d
	}
	artifactsMu.Lock()
	defer artifactsMu.Unlock()
	if d, ok := artifactsDirs[t]; ok {
		return d
	}
	d := t.TempDir()
	artifactsDirs[t] = d
	return d
}

func jsQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// startBrowser starts a headless Chromium for the test.
func startBrowser(t *testing.T, chrome string) context.Context {
	t.Helper()
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	t.Cleanup(cancel)
	ctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// loginConsole logs in to the console in tab and waits for its live stream.
func loginConsole(tab *browserTab, base, email, password string) {
	tab.t.Helper()
	tab.do("open the console", chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="login-email"]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="login-email"]`), email),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="login-password"]`), password),
		chromedp.Click(chromedp.CSS(`[data-testid="login-submit"]`)))
	tab.waitFor("the console after login", `!document.querySelector('[data-testid="app"]').hidden`)
	tab.waitFor("the live stream", `document.querySelector('[data-testid="conn-state"]').dataset.state === "live"`)
}

func TestBrowserWidgetAndConsole(t *testing.T) {
	chrome := chromiumPath(t)
	if testing.Short() {
		t.Skip("starts a browser")
	}
	h := startConsoleNode(t)
	// The agent: a plain agent account, as an admin creates one.
	h.json("POST", "/api/v1/agents", map[string]any{"email": "alice@example.com", "name": "Alice", "password": "alice-password"}).
		want(t, "create alice", 201)

	// Two customers already waiting, on WhatsApp and on the web.
	for _, in := range []core.Inbound{
		{Channel: "wa", ExternalID: "8613800000001", Name: "张三", Message: core.Message{Kind: core.KindText, Text: "我的订单还没到，可以查一下吗？"}},
		{Channel: "wa", ExternalID: "8613800000001", Name: "张三", Message: core.Message{Kind: core.KindText, Text: "订单号 20261122-0042"}},
		{Channel: "web", ExternalID: "a:" + strings.Repeat("7", 32), Name: "Maria García", Message: core.Message{Kind: core.KindText, Text: "Do you ship to Spain?"}},
	} {
		if _, err := h.n.Service().Ingest(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}

	browserCtx := startBrowser(t, chrome)
	agent := newTab(t, browserCtx, "console")
	visitor := newTab(t, browserCtx, "widget")
	loginConsole(agent, h.n.URL, "alice@example.com", "alice-password")
	agent.waitFor("availability", `document.querySelector('[data-testid="availability-toggle"]').dataset.availability === "available"`)
	// Chinese and back.
	agent.do("switch to Chinese", chromedp.Click(chromedp.CSS(`[data-testid="lang-toggle"]`)))
	agent.waitFor("Chinese labels", `document.querySelector('[data-testid="filter-mine"]').textContent === "我的"`)
	agent.do("switch to English", chromedp.Click(chromedp.CSS(`[data-testid="lang-toggle"]`)),
		chromedp.Click(chromedp.CSS(`[data-testid="filter-open"]`)))
	agent.waitFor("English labels", `document.querySelector('[data-testid="filter-mine"]').textContent === "Mine"`)

	// The visitor opens the demo page and writes.
	visitor.do("open the demo page", chromedp.Navigate(h.n.URL+"/demo?lang=en"),
		chromedp.WaitReady(chromedp.CSS("#kefu-widget")))
	visitor.waitFor("the widget's launcher", widgetSel("kefu-launcher"))
	visitor.do("open the widget", chromedp.Click(chromedp.JSPath(widgetSel("kefu-launcher"))))
	visitor.waitFor("the widget's panel", "!"+widgetSel("kefu-panel")+".hidden")
	const hello = "Hello from the demo page 你好"
	visitor.do("type a message", chromedp.SendKeys(chromedp.JSPath(widgetSel("kefu-input")), hello),
		chromedp.Click(chromedp.JSPath(widgetSel("kefu-send"))))

	// It reaches the console live: a conversation in the list, then its view.
	item := `[...document.querySelectorAll('[data-testid="conversation-item"]')]
		.find(e => e.querySelector('[data-testid="conversation-preview"]').textContent === ` + jsQuote(hello) + `)`
	agent.waitFor("the conversation in the list", item)
	agent.click("open the conversation", item)
	agent.waitFor("the visitor's text", `[...document.querySelectorAll('[data-testid="message"][data-sender="contact"] [data-testid="message-text"]')]
		.some(e => e.textContent === `+jsQuote(hello)+`)`)

	// An image, while the agent watches.
	img := filepath.Join(t.TempDir(), "photo.png")
	if err := os.WriteFile(img, consolePNG(t, 320, 200), 0o644); err != nil {
		t.Fatal(err)
	}
	visitor.do("attach an image", chromedp.SetUploadFiles(chromedp.JSPath(widgetSel("kefu-file-input")), []string{img}))
	visitor.waitFor("the image in the widget", widgetRoot+`.querySelector('[data-testid="kefu-image"][data-loaded="true"]')`)
	agent.waitFor("the image in the console", `[...document.querySelectorAll('[data-testid="message-image"]')]
		.some(i => i.src.startsWith("blob:") && i.complete && i.naturalWidth > 0)`)

	// A note (agents only), then the reply.
	const note = "Internal: customer sent a photo of the parcel"
	agent.do("write a note", chromedp.Click(chromedp.CSS(`[data-testid="composer-mode-note"]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="composer-input"]`), note),
		chromedp.Click(chromedp.CSS(`[data-testid="composer-send"]`)))
	agent.waitFor("the note", `[...document.querySelectorAll('[data-testid="message"][data-visibility="internal"] [data-testid="message-text"]')]
		.some(e => e.textContent === `+jsQuote(note)+`)`)
	const reply = "Thanks! We got your photo and are on it."
	agent.do("reply", chromedp.Click(chromedp.CSS(`[data-testid="composer-mode-reply"]`)),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="composer-input"]`), reply),
		chromedp.Click(chromedp.CSS(`[data-testid="composer-send"]`)))
	visitor.waitFor("the reply in the widget", `[...`+widgetRoot+`.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"] [data-testid="kefu-text"]')]
		.some(e => e.textContent === `+jsQuote(reply)+`)`)
	if v := visitor.eval(widgetRoot + ".textContent.includes(" + jsQuote(note) + ")"); v != false {
		t.Fatal("the widget shows the agent's internal note")
	}
	agent.waitFor("the reply's read marker", `[...document.querySelectorAll('[data-testid="message"][data-sender="agent"] [data-testid="message-status"]')]
		.some(e => e.dataset.status === "read" || e.dataset.status === "delivered")`)

	visitor.screenshot("screenshot-widget.png")
	agent.screenshot("screenshot-console.png")

	// The visitor typing shows in the console.
	visitor.do("type without sending", chromedp.SendKeys(chromedp.JSPath(widgetSel("kefu-input")), "Also"))
	agent.waitFor("the typing indicator", `!document.querySelector('[data-testid="typing-indicator"]').hidden`)
	visitor.eval(`(() => { const i = ` + widgetSel("kefu-input") + `; i.value = ""; i.dispatchEvent(new Event("input")); return true })()`)

	// Away and back.
	agent.do("go away", chromedp.Click(chromedp.CSS(`[data-testid="availability-toggle"]`)))
	agent.waitFor("away", `document.querySelector('[data-testid="availability-toggle"]').dataset.availability === "away"`)
	agent.do("come back", chromedp.Click(chromedp.CSS(`[data-testid="availability-toggle"]`)))
	agent.waitFor("available", `document.querySelector('[data-testid="availability-toggle"]').dataset.availability === "available"`)

	// Script in a message stays text, both ways.
	visitor.do("send markup", chromedp.SendKeys(chromedp.JSPath(widgetSel("kefu-input")), xssPayload),
		chromedp.Click(chromedp.JSPath(widgetSel("kefu-send"))))
	agent.waitFor("the markup as text in the console", `[...document.querySelectorAll('[data-testid="message"][data-sender="contact"] [data-testid="message-text"]')]
		.some(e => e.textContent === `+jsQuote(xssPayload)+`)`)
	agent.do("answer with markup", chromedp.SendKeys(chromedp.CSS(`[data-testid="composer-input"]`), xssPayload),
		chromedp.Click(chromedp.CSS(`[data-testid="composer-send"]`)))
	visitor.waitFor("the markup as text in the widget", `[...`+widgetRoot+`.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"] [data-testid="kefu-text"]')]
		.some(e => e.textContent === `+jsQuote(xssPayload)+`)`)
	time.Sleep(500 * time.Millisecond) // time for an injected image to fail and run its handler
	for _, tab := range []*browserTab{agent, visitor} {
		if v := tab.eval(`typeof window.__kefuXSS`); v != "undefined" {
			t.Errorf("%s: the payload ran: window.__kefuXSS is %v", tab.name, v)
		}
		if v := tab.eval(`[...document.querySelectorAll("script")].filter(s => !s.src).length`); v != float64(0) {
			t.Errorf("%s: %v inline scripts in the page", tab.name, v)
		}
		if v := tab.eval(`[...document.querySelectorAll("b, img[src='x'], img[src$='/x']")].length`); v != float64(0) {
			t.Errorf("%s: the payload made %v elements", tab.name, v)
		}
	}
	if v := visitor.eval(`[...` + widgetRoot + `.querySelectorAll("script, b, img:not([data-testid='kefu-image'])")].length`); v != float64(0) {
		t.Errorf("widget: the payload made %v elements in the widget", v)
	}
	if v := agent.eval(`[...document.querySelectorAll("#message-items img:not([data-testid='message-image']), #conversation-list img, #message-items script")].length`); v != float64(0) {
		t.Errorf("console: the payload made %v elements", v)
	}

	// A reply WhatsApp refuses shows the provider's reason; resending it
	// sends a new message.
	h.wa.FailNext(whatsapptest.Undeliverable)
	zhang := `[...document.querySelectorAll('[data-testid="conversation-item"]')]
		.find(e => e.querySelector('[data-testid="conversation-name"]').textContent === "张三")`
	agent.waitFor("张三's conversation", zhang)
	agent.click("open 张三's conversation", zhang)
	agent.waitFor("张三's messages", `[...document.querySelectorAll('[data-testid="message-text"]')].some(e => e.textContent === "订单号 20261122-0042")`)
	agent.waitFor("the unread count cleared", zhang+`.querySelector('[data-testid="unread-badge"]') === null`)
	agent.do("reply on WhatsApp", chromedp.SendKeys(chromedp.CSS(`[data-testid="composer-input"]`), "您好，我们马上查一下。"),
		chromedp.Click(chromedp.CSS(`[data-testid="composer-send"]`)))
	agent.waitFor("the failure and its reason", `[...document.querySelectorAll('[data-testid="message-fail-reason"]')].some(e => e.textContent.includes("131026"))`)
	agent.do("resend", chromedp.Click(chromedp.CSS(`[data-testid="resend"]`)))
	agent.waitFor("the resent message delivered", `[...document.querySelectorAll('[data-testid="message"][data-sender="agent"]')]
		.filter(e => e.querySelector('[data-testid="message-text"]').textContent === "您好，我们马上查一下。").length === 2 &&
		document.querySelector('[data-testid="message"][data-sender="agent"]:last-child [data-testid="message-status"]').dataset.status === "sent"`)
	if n := len(h.wa.Sent()); n != 1 {
		t.Errorf("WhatsApp got %d messages, want the resent one", n)
	}
	// Close and reopen.
	agent.do("close", chromedp.Click(chromedp.CSS(`[data-testid="action-close"]`)))
	agent.waitFor("closed", `document.querySelector('[data-testid="conversation-meta"]').textContent.includes("resolved") &&
		!document.querySelector('[data-testid="action-reopen"]').hidden`)
	agent.do("reopen", chromedp.Click(chromedp.CSS(`[data-testid="action-reopen"]`)))
	agent.waitFor("reopened", `document.querySelector('[data-testid="conversation-meta"]').textContent.includes("open") &&
		!document.querySelector('[data-testid="action-close"]').hidden`)

	for _, tab := range []*browserTab{agent, visitor} {
		for _, p := range tab.problems() {
			t.Errorf("%s: %s", tab.name, p)
		}
	}
	if t.Failed() {
		agent.fail("see above")
	}
	t.Logf("artifacts in %s", artifactsDir(t))
}

// An admin manages agents from the console, and pages back through a long
// conversation.
func TestBrowserConsoleAdmin(t *testing.T) {
	chrome := chromiumPath(t)
	if testing.Short() {
		t.Skip("starts a browser")
	}
	h := startConsoleNode(t)
	ctx := context.Background()
	var convID int64
	for i := range 70 {
		res, err := h.n.Service().Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "a:" + strings.Repeat("5", 32), Name: "Chatty",
			Message: core.Message{Kind: core.KindText, Text: fmt.Sprintf("line %02d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		convID = res.Conversation.ID
	}
	admin := newTab(t, startBrowser(t, chrome), "admin")
	loginConsole(admin, h.n.URL, consoleAdminMail, consoleAdminPass)

	// History, newest page first, then older on demand.
	admin.do("all open", chromedp.Click(chromedp.CSS(`[data-testid="filter-open"]`)))
	item := fmt.Sprintf(`document.querySelector('[data-testid="conversation-item"][data-conversation-id="%d"]')`, convID)
	admin.waitFor("the conversation", item)
	if v := admin.eval(item + `.querySelector('[data-testid="unread-badge"]').textContent`); v != "70" {
		t.Errorf("unread badge %v, want 70", v)
	}
	admin.click("open it", item)
	lines := `[...document.querySelectorAll('[data-testid="message"][data-sender="contact"]')].length`
	admin.waitFor("the newest page", lines+` > 0 && !document.querySelector('[data-testid="load-older"]').hidden`)
	first := admin.eval(lines)
	admin.do("load older", chromedp.Click(chromedp.CSS(`[data-testid="load-older"]`)))
	admin.waitFor("all 70 lines", lines+` === 70`)
	if first == float64(70) {
		t.Errorf("the first page held all %v lines", first)
	}
	admin.waitFor("the unread count cleared", item+`.querySelector('[data-testid="unread-badge"]') === null`)

	// Agents: create, reset a password, link to other channels, deactivate.
	admin.do("open the agents", chromedp.Click(chromedp.CSS(`[data-testid="agents-button"]`)))
	admin.waitFor("the agents panel", `!document.querySelector('[data-testid="agents-panel"]').hidden && document.querySelector('[data-testid="agent-row"]')`)
	admin.do("create Bob",
		chromedp.SendKeys(chromedp.CSS(`[data-testid="agent-create-name"]`), "Bob"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="agent-create-email"]`), "bob@example.com"),
		chromedp.SendKeys(chromedp.CSS(`[data-testid="agent-create-password"]`), "bob-initial-pw"),
		chromedp.Click(chromedp.CSS(`[data-testid="agent-create-submit"]`)))
	bob := `[...document.querySelectorAll('[data-testid="agent-row"]')].find(r => r.textContent.includes("bob@example.com"))`
	admin.waitFor("Bob's row", bob)
	admin.do("reset Bob's password", chromedp.Click(chromedp.JSPath(bob+`.querySelector('[data-testid="agent-reset"]')`)),
		chromedp.SendKeys(chromedp.JSPath(bob+`.querySelector('input[name="password"]')`), "bob-new-password"),
		chromedp.Click(chromedp.JSPath(bob+`.querySelector('form button')`)))
	admin.waitFor("the reset's confirmation", `[...document.querySelectorAll('[data-testid="toast"]')].some(e => e.textContent === "Password of Bob reset.")`)
	admin.do("link Bob to Work WeChat and Slack", chromedp.Click(chromedp.JSPath(bob+`.querySelector('[data-testid="agent-link"]')`)),
		chromedp.SendKeys(chromedp.JSPath(bob+`.querySelector('[data-testid="agent-link-wecom"]')`), "bob"),
		chromedp.SendKeys(chromedp.JSPath(bob+`.querySelector('[data-testid="agent-link-slack"]')`), "U0BOB"),
		chromedp.Click(chromedp.JSPath(bob+`.querySelector('[data-testid="agent-link-save"]')`)))
	admin.waitFor("Bob's links shown", bob+`.querySelector('[data-testid="agent-links"]').textContent === "Work WeChat: bob · Slack: U0BOB"`)
	admin.do("deactivate Bob", chromedp.Click(chromedp.JSPath(bob+`.querySelector('[data-testid="agent-deactivate"]')`)))
	admin.waitFor("Bob deactivated", bob+`.querySelector('[data-testid="agent-activate"]')`)
	admin.screenshot("console-agents.png")
	a := h.n.Agent(t, "bob@example.com")
	if a.Active || !a.CheckPassword("bob-new-password") || a.WeComUserID != "bob" || a.SlackUser != "U0BOB" {
		t.Fatalf("Bob after the admin's changes: active %v, new password %v, links %q %q",
			a.Active, a.CheckPassword("bob-new-password"), a.WeComUserID, a.SlackUser)
	}

	// A link to a conversation (a Slack thread carries one) opens it, on a
	// fresh load as from a page already open.
	linked := func(text string) int64 {
		res, err := h.n.Service().Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "a:" + strings.Repeat(text[:1], 32), Name: "Linked",
			Message: core.Message{Kind: core.KindText, Text: text}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Conversation.ID
	}
	shows := func(text string) string {
		return `[...document.querySelectorAll('[data-testid="message"][data-sender="contact"] [data-testid="message-text"]')].some(e => e.textContent === ` + jsQuote(text) + `)`
	}
	one := linked("1 where is my parcel?")
	admin.do("leave the console", chromedp.Navigate("about:blank"))
	admin.do("follow a link", chromedp.Navigate(fmt.Sprintf("%s/console/#/conversations/%d", h.n.URL, one)))
	admin.waitFor("the linked conversation", shows("1 where is my parcel?"))
	two := linked("2 and my refund?")
	admin.eval(fmt.Sprintf(`(location.hash = "#/conversations/%d", true)`, two))
	admin.waitFor("the second linked conversation", shows("2 and my refund?"))
	for _, p := range admin.problems() {
		t.Errorf("admin: %s", p)
	}
}
