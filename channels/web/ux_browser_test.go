package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
	"github.com/kefuhq/kefu/node/nodetest"
)

// A customer who wrote while no agent was online got the automatic offline
// reply: their message still counts as unread in the console (the reply
// answered nobody's question).
func TestBrowserAutomaticReplyLeavesTheMessageUnread(t *testing.T) {
	chrome := chromiumPath(t)
	if testing.Short() {
		t.Skip("starts a browser")
	}
	n := nodetest.Start(t, `
routing: {offline_reply: "We are away; we will answer soon."}
agents:
  - {email: root@example.com, name: Root, role: admin, password: root-password}
channels:
  web: {enabled: true}
`)
	in, err := n.Service().Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "a:" + strings.Repeat("7", 32), Name: "Maria",
		Message: core.Message{Kind: core.KindText, Text: "I need a refund"}})
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the offline reply", func() bool {
		for _, m := range n.Messages(t, in.Conversation.ID) {
			if m.SenderKind == core.SenderBot {
				return true
			}
		}
		return false
	})
	tab := newTab(t, startBrowser(t, chrome), "console")
	loginConsole(tab, n.URL, "root@example.com", "root-password")
	tab.do("all open", chromedp.Click(chromedp.CSS(`[data-testid="filter-open"]`)))
	item := fmt.Sprintf(`document.querySelector('[data-testid="conversation-item"][data-conversation-id="%d"]')`, in.Conversation.ID)
	tab.waitFor("the conversation", item)
	tab.waitFor("its unread badge", item+`.querySelector('[data-testid="unread-badge"]')?.textContent === "1"`)

	// A reply the customer's channel refuses for good says so in the
	// conversation, with the reason.
	root := n.Agent(t, "root@example.com")
	r, err := n.Service().Reply(context.Background(), root.ID, in.Conversation.ID, core.Message{Kind: core.KindText, Text: "here is your refund link"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Service().UpdateStatus(context.Background(), core.StatusUpdate{MessageID: r.ID, Status: core.MsgFailed, Reason: "the user blocked the bot"}); err != nil {
		t.Fatal(err)
	}
	tab.click("the conversation", item)
	tab.waitFor("the failure in the conversation", `[...document.querySelectorAll('[data-testid="message-event"]')].some(e => e.textContent.startsWith("Root's reply was not delivered to the customer: the user blocked the bot"))`)

	// The message list is redrawn on every update and is no live region; a
	// screen reader hears a new message once, from the announcer.
	if v := tab.eval(`document.querySelector('[data-testid="message-list"]').hasAttribute("aria-live")`); v != false {
		t.Fatal("the message list is a live region")
	}
	if _, err := n.Service().Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "a:" + strings.Repeat("7", 32),
		Message: core.Message{Kind: core.KindText, Text: "still there?"}}); err != nil {
		t.Fatal(err)
	}
	tab.waitFor("the new message announced", `document.querySelector('[data-testid="announcer"]').textContent === "Maria: still there?"`)
}

// A reload while the server cannot be reached (a proxy answering 502 while
// kefu restarts) keeps the agent's login, and the console starts once the
// server answers again.
func TestBrowserConsoleKeepsItsLoginWhileTheServerIsAway(t *testing.T) {
	chrome := chromiumPath(t)
	if testing.Short() {
		t.Skip("starts a browser")
	}
	n := nodetest.Start(t, `
agents:
  - {email: root@example.com, name: Root, role: admin, password: root-password}
channels:
  web: {enabled: true}
`)
	target, err := url.Parse(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var away atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if away.Load() && strings.HasPrefix(r.URL.Path, "/api/") {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	tab := newTab(t, startBrowser(t, chrome), "console")
	loginConsole(tab, proxy.URL, "root@example.com", "root-password")
	away.Store(true)
	tab.do("reload", chromedp.Navigate(proxy.URL+"/console/"))
	tab.waitFor("the server's absence said", `!document.querySelector('[data-testid="login-error"]').hidden`)
	if tok, _ := tab.eval(`localStorage.getItem("kefu.console.token")`).(string); !strings.HasPrefix(tok, "kfa_") {
		t.Fatalf("the saved login was dropped while the server was away: %q", tok)
	}
	away.Store(false)
	tab.waitFor("the console, without a new login", `!document.querySelector('[data-testid="app"]').hidden`)
}

// Coming back to the tab with the widget open, the visitor has the reply
// that came meanwhile in view: the launcher's unread badge goes.
func TestWidgetBadgeClearsWhenTheTabReturns(t *testing.T) {
	chrome := chromiumPath(t)
	if testing.Short() {
		t.Skip("starts a browser")
	}
	n := nodetest.Start(t, `
routing: {offline_reply: ""}
agents:
  - {email: root@example.com, name: Root, role: admin, password: root-password}
channels:
  web: {enabled: true}
`)
	v := newTab(t, startBrowser(t, chrome), "widget")
	v.do("open the demo page", chromedp.Navigate(n.URL+"/demo?lang=en"), chromedp.WaitReady(chromedp.CSS("#kefu-widget")))
	v.waitFor("launcher", widgetSel("kefu-launcher"))
	v.do("open", chromedp.Click(chromedp.JSPath(widgetSel("kefu-launcher"))))
	v.do("write", chromedp.SendKeys(chromedp.JSPath(widgetSel("kefu-input")), "hi"),
		chromedp.Click(chromedp.JSPath(widgetSel("kefu-send"))))
	v.waitFor("sent", `[...`+widgetRoot+`.querySelectorAll('[data-testid="kefu-message"][data-sender="contact"]')].some(e => e.getAttribute("data-id"))`)
	v.waitFor("the socket", `document.querySelector("#kefu-widget").dataset.state === "ws"`)
	// The tab goes to the background, the panel still open.
	v.eval(`(Object.defineProperty(document, "hidden", {configurable: true, get: () => window.__hidden}), window.__hidden = true, document.dispatchEvent(new Event("visibilitychange")), true)`)
	cs, err := n.Service().Store().Conversations(context.Background(), core.ConversationFilter{Limit: 1})
	if err != nil || len(cs) == 0 {
		t.Fatal(cs, err)
	}
	if _, err := n.Service().Reply(context.Background(), n.Agent(t, "root@example.com").ID, cs[0].ID,
		core.Message{Kind: core.KindText, Text: "hello from support"}); err != nil {
		t.Fatal(err)
	}
	v.waitFor("the reply", `[...`+widgetRoot+`.querySelectorAll('[data-testid="kefu-message"][data-sender="agent"]')].length === 1`)
	v.waitFor("the badge while away", `!`+widgetSel("kefu-badge")+`.hidden`)
	v.eval(`(window.__hidden = false, document.dispatchEvent(new Event("visibilitychange")), true)`)
	v.waitFor("the badge gone", widgetSel("kefu-badge")+`.hidden`)
}
