package wecom_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	_ "github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/channels/wechat"
	"github.com/kefuhq/kefu/channels/wechat/wechattest"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/channels/wecom/wecomtest"
	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/node"
)

// TestEndToEnd runs a real node from YAML with the web, wechat and wecom
// channels against the two fake APIs: a WeChat customer's message reaches
// Alice on Work WeChat, her replies from Work WeChat ("#N text" and a
// plain reply) reach the customer's openid through the customer-service
// API in order, and the console's REST API shows the same conversation.
func TestEndToEnd(t *testing.T) {
	const (
		wxApp, wxSecret, wxToken = "wx1111222233334444", "wx-secret", "wx-token"
		openID                   = "oAbC-customer-openid"
	)
	wx := wechattest.NewServer(wxApp, wxSecret)
	t.Cleanup(wx.Close)
	wc := wecomtest.NewServer(corpID, secret, agentID)
	t.Cleanup(wc.Close)

	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: "127.0.0.1:0"}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
routing: {strategy: least_busy}
agents:
  - {email: alice@example.com, name: Alice, password: alice-password, wecom_userid: alice}
  - {email: bob@example.com, name: Bob, password: bob-password}
channels:
  web: {enabled: true}
  wechat: {enabled: true, app_id: %q, app_secret: %q, token: %q, encoding_aes_key: %q, api_base: %q}
  wecom: {enabled: true, corp_id: %q, agent_id: %d, secret: %q, token: %q, encoding_aes_key: %q, api_base: %q}
`, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"),
		wxApp, wxSecret, wxToken, aesKey, wx.URL,
		corpID, agentID, secret, token, aesKey, wc.URL)
	cfg, err := config.Parse("e2e.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, node.Options{Listener: ln, Logger: quiet})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node stopped with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("node did not stop")
		}
	})
	base := "http://" + ln.Addr().String()
	store := n.Service().Store()
	waitFor(t, "node ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	waitFor(t, "wecom follower started", func() bool {
		_, err := store.Setting(context.Background(), "follow.wecom")
		return err == nil
	})
	time.Sleep(5 * time.Millisecond)

	app := wecomtest.App{CorpID: corpID, AgentID: agentID, Token: token, AESKey: aesKey}
	agentSays := func(text string) {
		t.Helper()
		resp, err := app.Post(http.DefaultClient, base+"/webhooks/wecom", app.Text("alice", text, ""))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("wecom callback %q: HTTP %d", text, resp.StatusCode)
		}
	}
	acct := wechattest.Account{AppID: wxApp, Token: wxToken, AESKey: aesKey, OriginalID: "gh_e2e"}
	var msgID int64 = 24_000_000_000_000_000
	customerSays := func(text string) {
		t.Helper()
		msgID++
		resp, err := acct.Post(http.DefaultClient, base+"/webhooks/wechat", wechattest.Safe, acct.Text(openID, text, msgID))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "success" {
			t.Fatalf("wechat callback %q: HTTP %d %q", text, resp.StatusCode, b)
		}
	}
	waitApp := func(want string) {
		t.Helper()
		if got, ok := wc.WaitFor(10*time.Second, func(ms []wecomtest.AppMessage) bool {
			return slices.ContainsFunc(ms, func(m wecomtest.AppMessage) bool { return m.ToUser == "alice" && m.Text == want })
		}); !ok {
			var texts []string
			for _, m := range got {
				texts = append(texts, m.Text)
			}
			t.Fatalf("alice did not get %q; got %q", want, texts)
		}
	}

	// Alice goes on from her phone.
	agentSays("/on")
	waitApp("You are on: new conversations will be assigned to you. No conversation is waiting.")

	// A WeChat customer writes; the conversation is routed to Alice, who is
	// told on Work WeChat.
	customerSays("你好，我的订单还没到")
	convs, err := store.Conversations(context.Background(), core.ConversationFilter{Channel: "wechat", ExternalID: openID})
	if err != nil || len(convs) != 1 {
		t.Fatalf("conversations = %v, %v", convs, err)
	}
	conv := convs[0]
	alice, err := store.AgentByEmail(context.Background(), "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "routed to Alice", func() bool {
		c, err := store.Conversation(context.Background(), conv.ID)
		return err == nil && c.AssigneeID == alice.ID
	})
	label := fmt.Sprintf("[#%d WeChat · customer %d]", conv.ID, conv.ContactID)
	waitApp(label + " assigned to you, waiting:\n› 你好，我的订单还没到")
	// The core knows WeChat's 48-hour window for the conversation.
	if c, _ := store.Conversation(context.Background(), conv.ID); !n.Service().WindowEnds(c).Equal(c.LastInboundAt.Add(wechat.Window)) {
		t.Fatalf("window ends %v, want 48 h after %v", n.Service().WindowEnds(c), c.LastInboundAt)
	}

	// Alice answers from Work WeChat: "#N text", then a plain reply.
	agentSays(fmt.Sprintf("#%d 您好，我们正在查询", conv.ID))
	agentSays("请稍等片刻")
	sent := wx.WaitSent(2, 10*time.Second)
	if len(sent) != 2 {
		t.Fatalf("customer-service messages = %+v", sent)
	}
	for i, want := range []string{"您好，我们正在查询", "请稍等片刻"} {
		if sent[i].ToUser != openID || sent[i].MsgType != "text" || sent[i].Text.Content != want {
			t.Fatalf("sent[%d] = %+v, want %q to %s", i, sent[i], want, openID)
		}
	}

	// The customer writes again: Alice is told.
	customerSays("谢谢")
	waitApp(label + " 谢谢")

	// The store has the whole conversation, replies marked sent.
	waitFor(t, "replies marked sent", func() bool {
		ms, err := store.Messages(context.Background(), core.MessageQuery{ConversationID: conv.ID})
		if err != nil {
			return false
		}
		sentN := 0
		for _, m := range ms {
			if m.SenderKind == core.SenderAgent && m.Status == core.MsgSent {
				sentN++
			}
		}
		return sentN == 2
	})
	ms, err := store.Messages(context.Background(), core.MessageQuery{ConversationID: conv.ID})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range ms {
		if m.Kind != core.KindEvent {
			texts = append(texts, string(m.SenderKind)+":"+m.Text)
		}
	}
	want := []string{"contact:你好，我的订单还没到", "agent:您好，我们正在查询", "agent:请稍等片刻", "contact:谢谢"}
	if !slices.Equal(texts, want) {
		t.Fatalf("conversation = %q, want %q", texts, want)
	}

	// The console's REST API shows the same conversation.
	body, _ := json.Marshal(map[string]string{"email": "alice@example.com", "password": "alice-password"})
	resp, err := http.Post(base+"/api/v1/auth/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || login.Token == "" {
		t.Fatalf("login: HTTP %d, %v", resp.StatusCode, err)
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/conversations/%d/messages", base, conv.ID), nil)
	req.Header.Set("Authorization", "Bearer "+login.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Messages []struct {
			SenderKind string `json:"sender_kind"`
			Kind       string `json:"kind"`
			Text       string `json:"text"`
			Status     string `json:"status"`
		} `json:"messages"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("messages: HTTP %d, %v", resp.StatusCode, err)
	}
	texts = nil
	for _, m := range page.Messages {
		if m.Kind != "event" {
			texts = append(texts, m.SenderKind+":"+m.Text)
		}
	}
	if !slices.Equal(texts, want) {
		t.Fatalf("REST conversation = %q, want %q", texts, want)
	}
}

// TestFailedNodeReleasesTheRoute: a node that fails to start after building
// its channels (here: its address is taken) releases the api_base route
// they took, so that the process can route Work WeChat elsewhere.
func TestFailedNodeReleasesTheRoute(t *testing.T) {
	wc := wecomtest.NewServer(corpID, secret, agentID)
	t.Cleanup(wc.Close)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
server: {addr: %q}
store: {driver: sqlite, dsn: %q}
media: {dir: %q}
log: {level: error}
channels:
  wecom: {enabled: true, corp_id: %q, agent_id: %d, secret: %q, token: %q, encoding_aes_key: %q, api_base: %q}
`, taken.Addr().String(), filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"),
		corpID, agentID, secret, token, aesKey, wc.URL)
	cfg, err := config.Parse("failed.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if n, err := node.New(context.Background(), cfg, node.Options{Logger: quiet}); err == nil {
		n.Close()
		t.Fatal("node.New on a taken address succeeded")
	}
	release, err := wxapi.Route(wxapi.WorkHost, "http://127.0.0.1:1/elsewhere")
	if err != nil {
		t.Fatalf("after the failed start: %v", err)
	}
	release()
}
