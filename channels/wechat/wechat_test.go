package wechat_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/wechat"
	"github.com/kefuhq/kefu/channels/wechat/wechattest"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/core"
)

func TestConfigValidate(t *testing.T) {
	good := wechat.Config{AppID: appID, AppSecret: appSecret, Token: token, EncodingAESKey: aesKey, APIBase: wechat.DefaultAPIBase}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	plain := good
	plain.EncodingAESKey = ""
	if err := plain.Validate(); err != nil {
		t.Fatalf("plaintext-only config: %v", err)
	}
	bad := wechat.Config{EncodingAESKey: "short", APIBase: "ftp://x"}
	err := bad.Validate()
	for _, key := range []string{"app_id", "app_secret", "token", "encoding_aes_key", "api_base"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate() = %v, want a problem with %s", err, key)
		}
	}
}

func TestVerifyURL(t *testing.T) {
	h := newHarness(t, options{})
	req, _ := h.acct.VerifyRequest(h.srv.URL, "echo-1234")
	if code, body := h.do(req); code != http.StatusOK || body != "echo-1234" {
		t.Fatalf("good URL check: %d %q", code, body)
	}
	wrong := h.acct
	wrong.Token = "not-the-token"
	req, _ = wrong.VerifyRequest(h.srv.URL, "echo-1234")
	if code, body := h.do(req); code != http.StatusForbidden || strings.Contains(body, "echo-1234") {
		t.Fatalf("bad signature: %d %q", code, body)
	}
	stale := h.acct
	stale.Now = func() time.Time { return time.Now().Add(-10 * time.Minute) }
	req, _ = stale.VerifyRequest(h.srv.URL, "echo-1234")
	if code, _ := h.do(req); code != http.StatusForbidden {
		t.Fatalf("stale timestamp: %d", code)
	}
}

func TestModes(t *testing.T) {
	h := newHarness(t, options{})
	for i, mode := range []wechattest.Mode{wechattest.Plain, wechattest.Compatible, wechattest.Safe} {
		code, body := h.post(mode, h.acct.Text("o-mode", "hello "+string(rune('a'+i)), int64(100+i)))
		if code != http.StatusOK || body != "success" {
			t.Fatalf("mode %d: %d %q", mode, code, body)
		}
	}
	ms := h.messages(h.conversation("o-mode").ID)
	if len(ms) != 3 || ms[0].Text != "hello a" || ms[1].Text != "hello b" || ms[2].Text != "hello c" {
		t.Fatalf("messages = %+v", ms)
	}
	if ms[0].SenderKind != core.SenderContact {
		t.Fatalf("sender = %s", ms[0].SenderKind)
	}
}

func TestBadCallbacksStoreNothing(t *testing.T) {
	h := newHarness(t, options{})
	msg := h.acct.Text("o-bad", "hi", 1)
	tamper := func(mode wechattest.Mode, f func(*http.Request)) *http.Request {
		req, err := h.acct.Request(h.srv.URL, mode, msg)
		if err != nil {
			t.Fatal(err)
		}
		f(req)
		return req
	}
	setQuery := func(k, v string) func(*http.Request) {
		return func(r *http.Request) {
			q := r.URL.Query()
			q.Set(k, v)
			r.URL.RawQuery = q.Encode()
		}
	}
	otherApp := h.acct
	otherApp.AppID = "wxffffffffffffffff"
	otherKey := h.acct
	otherKey.AESKey = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210abcdefg"
	stale := h.acct
	stale.Now = func() time.Time { return time.Now().Add(-6 * time.Minute) }
	future := h.acct
	future.Now = func() time.Time { return time.Now().Add(6 * time.Minute) }
	build := func(a wechattest.Account, mode wechattest.Mode) *http.Request {
		req, err := a.Request(h.srv.URL, mode, msg)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	tests := []struct {
		name string
		req  *http.Request
		want int
	}{
		{"wrong signature", tamper(wechattest.Plain, setQuery("signature", strings.Repeat("0", 40))), http.StatusForbidden},
		{"no signature", tamper(wechattest.Plain, setQuery("signature", "")), http.StatusForbidden},
		{"stale timestamp", build(stale, wechattest.Plain), http.StatusForbidden},
		{"timestamp from the future", build(future, wechattest.Safe), http.StatusForbidden},
		{"changed nonce", tamper(wechattest.Plain, setQuery("nonce", "1")), http.StatusForbidden},
		{"wrong msg_signature", tamper(wechattest.Safe, setQuery("msg_signature", strings.Repeat("a", 40))), http.StatusForbidden},
		{"sealed for another AppID", build(otherApp, wechattest.Safe), http.StatusForbidden},
		{"another EncodingAESKey", build(otherKey, wechattest.Safe), http.StatusForbidden},
		{"unknown encrypt_type", tamper(wechattest.Plain, setQuery("encrypt_type", "rot13")), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := h.do(tt.req); code != tt.want {
				t.Fatalf("HTTP %d %q, want %d", code, body, tt.want)
			}
		})
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("bad callbacks stored %d conversations", len(cs))
	}
}

func TestEncryptedCallbackWithoutKey(t *testing.T) {
	h := newHarness(t, options{noKey: true})
	if code, _ := h.post(wechattest.Safe, h.acct.Text("o-1", "hi", 1)); code != http.StatusBadRequest {
		t.Fatalf("safe mode without a key: HTTP %d", code)
	}
	if code, _ := h.post(wechattest.Plain, h.acct.Text("o-1", "hi", 2)); code != http.StatusOK {
		t.Fatalf("plaintext: HTTP %d", code)
	}
}

func TestMalformedAndOversize(t *testing.T) {
	h := newHarness(t, options{})
	if code, _ := h.post(wechattest.Plain, []byte("<xml><FromUserName>")); code != http.StatusBadRequest {
		t.Fatalf("malformed XML: HTTP %d", code)
	}
	if code, _ := h.post(wechattest.Plain, []byte("<xml><MsgType>text</MsgType></xml>")); code != http.StatusBadRequest {
		t.Fatalf("no sender: HTTP %d", code)
	}
	big := h.acct.Text("o-1", strings.Repeat("x", wechat.MaxBodyBytes), 1)
	if code, _ := h.post(wechattest.Plain, big); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize: HTTP %d", code)
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("stored %d conversations", len(cs))
	}
}

func TestDuplicatesStoredOnce(t *testing.T) {
	h := newHarness(t, options{})
	msg := h.acct.Text("o-dup", "only once", 4242)
	for i := range 4 { // the callback and WeChat's three retries
		if code, body := h.post(wechattest.Safe, msg); code != http.StatusOK || body != "success" {
			t.Fatalf("delivery %d: %d %q", i, code, body)
		}
	}
	created := time.Now().Unix()
	click := h.acct.Event("o-dup", "CLICK", "ORDER_STATUS", created)
	for range 3 {
		h.post(wechattest.Plain, click)
	}
	ms := h.messages(h.conversation("o-dup").ID)
	if len(ms) != 2 || ms[0].Text != "only once" || ms[1].Text != "[menu] ORDER_STATUS" {
		t.Fatalf("messages = %+v", ms)
	}
	// Another click in another second is another event.
	h.post(wechattest.Plain, h.acct.Event("o-dup", "CLICK", "ORDER_STATUS", created+1))
	if ms := h.messages(h.conversation("o-dup").ID); len(ms) != 3 {
		t.Fatalf("%d messages after a second click, want 3", len(ms))
	}
	// And another menu in the same second too (CreateTime is in seconds).
	other := h.acct.Event("o-dup", "CLICK", "TALK_TO_AGENT", created)
	for range 2 {
		h.post(wechattest.Plain, other)
	}
	if ms := h.messages(h.conversation("o-dup").ID); len(ms) != 4 || ms[3].Text != "[menu] TALK_TO_AGENT" {
		t.Fatalf("messages after another menu in the same second = %+v, want it stored once", ms)
	}
}

func TestInboundKinds(t *testing.T) {
	h := newHarness(t, options{})
	img := pngImage(t)
	h.api.AddMedia("img-1", wechattest.Media{Type: "image", CType: "image/png", Body: img})
	h.api.AddMedia("voice-1", wechattest.Media{Type: "voice", CType: "audio/amr", Body: amrVoice()})
	h.api.AddMedia("video-1", wechattest.Media{Type: "video", CType: "video/mp4", Body: mp4Video()})

	posts := [][]byte{
		h.acct.Image("o-k", "img-1", "", 1),
		h.acct.Voice("o-k", "voice-1", "amr", "我的订单到哪了", 2),
		h.acct.Video("o-k", "video-1", "thumb-1", 3),
		h.acct.Location("o-k", 23.134521, 113.358803, 20, "广州市天河区", 4),
		h.acct.Link("o-k", "Order 42", "the one that is late", "https://shop.example.com/o/42", 5),
		h.acct.Image("o-k", "gone", "", 6),                                         // expired on WeChat: kept as text
		h.acct.Event("o-k", "VIEW", "https://shop.example.com", time.Now().Unix()), // does not open the window: ignored
		h.acct.Event("o-k", "LOCATION", "", time.Now().Unix()),                     // a location report: ignored
	}
	for i, p := range posts {
		if code, body := h.post(wechattest.Safe, p); code != http.StatusOK || body != "success" {
			t.Fatalf("post %d: %d %q", i, code, body)
		}
	}
	ms := h.messages(h.conversation("o-k").ID)
	if len(ms) != 6 {
		t.Fatalf("%d messages, want 6: %+v", len(ms), ms)
	}
	if ms[0].Kind != core.KindImage || ms[0].Media == nil || ms[0].Media.Type != "image/png" || ms[0].Media.Size != int64(len(img)) {
		t.Errorf("image = %+v %+v", ms[0], ms[0].Media)
	}
	if ms[1].Kind != core.KindFile || ms[1].Media == nil || ms[1].Media.Type != "audio/amr" || ms[1].Text != "我的订单到哪了" {
		t.Errorf("voice = %+v %+v", ms[1], ms[1].Media)
	}
	if ms[2].Kind != core.KindFile || ms[2].Media == nil || ms[2].Media.Type != "video/mp4" {
		t.Errorf("video = %+v %+v", ms[2], ms[2].Media)
	}
	if ms[3].Text != "[location] 广州市天河区 (23.134521, 113.358803)" {
		t.Errorf("location = %q", ms[3].Text)
	}
	if ms[4].Text != "[link] Order 42\nthe one that is late\nhttps://shop.example.com/o/42" {
		t.Errorf("link = %q", ms[4].Text)
	}
	if ms[5].Kind != core.KindText || ms[5].Text != "[image] (expired on WeChat)" {
		t.Errorf("expired image = %+v", ms[5])
	}
	// The kept media can be read back.
	r, _, err := h.media.Open(context.Background(), ms[0].Media.Key)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

func TestImageURLOnlyFromWeChatHosts(t *testing.T) {
	h := newHarness(t, options{})
	hits := 0
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		_, _ = w.Write(pngImage(t))
	}))
	defer internal.Close()
	// In plaintext mode the signature does not cover the body: a PicUrl
	// elsewhere than WeChat's image hosts is never fetched.
	h.post(wechattest.Plain, h.acct.Image("o-ssrf", "gone", internal.URL+"/secret.png", 1))
	h.post(wechattest.Plain, h.acct.Image("o-ssrf", "", internal.URL+"/secret.png", 2))
	ms := h.messages(h.conversation("o-ssrf").ID)
	if hits != 0 || len(ms) != 1 || ms[0].Kind != core.KindText {
		t.Fatalf("hits %d, messages %+v", hits, ms)
	}
}

func TestFollowWelcomeAndUnfollow(t *testing.T) {
	h := newHarness(t, options{welcome: "Welcome! Write to us any time."})
	// An unfollow without a conversation stores nothing.
	h.post(wechattest.Plain, h.acct.Event("o-f", "unsubscribe", "", time.Now().Unix()))
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("unfollow started a conversation")
	}
	sub := h.acct.Event("o-f", "subscribe", "qrscene_spring", time.Now().Unix())
	h.post(wechattest.Safe, sub)
	h.post(wechattest.Safe, sub) // WeChat's retry: no second welcome
	sent := h.api.WaitSent(1, 5*time.Second)
	if len(sent) != 1 || sent[0].ToUser != "o-f" || sent[0].Text.Content != "Welcome! Write to us any time." {
		t.Fatalf("sent = %+v", sent)
	}
	conv := h.conversation("o-f")
	time.Sleep(10 * time.Millisecond) // the unfollow comes later, as it would
	h.post(wechattest.Plain, h.acct.Event("o-f", "unsubscribe", "", time.Now().Unix()+1))
	// WeChat refuses messages to someone who unfollowed: the window does
	// not move.
	if c := h.conversation("o-f"); !c.LastInboundAt.Equal(conv.LastInboundAt) {
		t.Errorf("the unfollow moved the reply window: last inbound %v, before %v", c.LastInboundAt, conv.LastInboundAt)
	}
	ms := h.messages(conv.ID)
	if len(ms) != 3 || ms[0].Text != "[followed the Official Account by scanning QR code spring]" ||
		ms[1].SenderKind != core.SenderBot || ms[2].Text != "[unfollowed the Official Account]" {
		t.Fatalf("messages = %+v", ms)
	}
	time.Sleep(100 * time.Millisecond)
	if got := h.api.Sent(); len(got) != 1 {
		t.Fatalf("%d welcomes sent, want 1", len(got))
	}
}

// An image's caption goes as a text message after it (WeChat's image
// messages carry none); a caption refused for a moment is retried alone,
// without sending the image again.
func TestSendImageWithCaption(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Safe, h.acct.Text("o-cap", "hi", 1))
	conv := h.conversation("o-cap")
	m, err := h.media.Save(context.Background(), strings.NewReader(string(pngImage(t))), "invoice.png")
	if err != nil {
		t.Fatal(err)
	}
	h.api.Fail(wechattest.PathCustomSend, wechattest.Failure{}, wechattest.Failure{Status: http.StatusInternalServerError})
	r := h.reply(conv.ID, core.Message{Kind: core.KindImage, Media: &m, Text: "Your invoice, order 4711"})
	h.waitMessage(r.ID, "image and caption sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	sent := h.api.Sent()
	if len(sent) != 2 || sent[0].MsgType != "image" || sent[1].MsgType != "text" || sent[1].Text.Content != "Your invoice, order 4711" {
		t.Fatalf("sent = %+v, want the image, then its caption once", sent)
	}
	if ups := h.api.Uploads(); len(ups) != 1 {
		t.Fatalf("%d uploads, want 1", len(ups))
	}
	if n := len(h.api.CallsTo(wechattest.PathCustomSend)); n != 3 {
		t.Fatalf("%d send calls, want 3 (the caption retried)", n)
	}
}

func TestSendTextAndImage(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Safe, h.acct.Text("o-s", "hi", 1))
	conv := h.conversation("o-s")
	r1 := h.reply(conv.ID, core.Message{Kind: core.KindText, Text: "Hello <there> & welcome"})
	h.waitMessage(r1.ID, "text sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	m, err := h.media.Save(context.Background(), strings.NewReader(string(pngImage(t))), "photo.png")
	if err != nil {
		t.Fatal(err)
	}
	r2 := h.reply(conv.ID, core.Message{Kind: core.KindImage, Media: &m})
	h.waitMessage(r2.ID, "image sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	sent := h.api.Sent()
	if len(sent) != 2 || sent[0].ToUser != "o-s" || sent[0].Text.Content != "Hello <there> & welcome" ||
		sent[1].MsgType != "image" || sent[1].Image.MediaID == "" {
		t.Fatalf("sent = %+v", sent)
	}
	ups := h.api.Uploads()
	if len(ups) != 1 || ups[0].Type != "image" || len(ups[0].Body) != int(m.Size) {
		t.Fatalf("uploads = %d", len(ups))
	}
	// A file WeChat cannot carry fails at once with a reason.
	pdf, err := h.media.Save(context.Background(), strings.NewReader("%PDF-1.4\n%âãÏÓ\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"), "a.pdf")
	if err != nil {
		t.Fatal(err)
	}
	r3 := h.reply(conv.ID, core.Message{Kind: core.KindFile, Media: &pdf})
	got := h.waitMessage(r3.ID, "file failed", func(m core.Message) bool { return m.Status == core.MsgFailed })
	if !strings.Contains(got.FailReason, "text, images and voice") {
		t.Fatalf("reason = %q", got.FailReason)
	}
}

func TestWindowClosed45015And45047(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Plain, h.acct.Text("o-w", "hi", 1))
	conv := h.conversation("o-w")
	h.api.Fail(wechattest.PathCustomSend, wechattest.Failure{ErrCode: 45015}, wechattest.Failure{ErrCode: 45047})
	r1 := h.reply(conv.ID, core.Message{Kind: core.KindText, Text: "one"})
	m1 := h.waitMessage(r1.ID, "45015 failure", func(m core.Message) bool { return m.Status == core.MsgFailed })
	if !strings.Contains(m1.FailReason, "48-hour window") || !strings.Contains(m1.FailReason, "45015") {
		t.Fatalf("reason = %q", m1.FailReason)
	}
	r2 := h.reply(conv.ID, core.Message{Kind: core.KindText, Text: "two"})
	m2 := h.waitMessage(r2.ID, "45047 failure", func(m core.Message) bool { return m.Status == core.MsgFailed })
	if !strings.Contains(m2.FailReason, "45047") {
		t.Fatalf("reason = %q", m2.FailReason)
	}
	if n := len(h.api.CallsTo(wechattest.PathCustomSend)); n != 2 {
		t.Fatalf("%d send calls, want 2 (no retries)", n)
	}
	// The core knows the window: 48 hours after the customer's message it
	// refuses a reply before anything is sent.
	h.advance(wechat.Window + time.Minute)
	_, err := h.svc.Reply(context.Background(), h.agent.ID, conv.ID, core.Message{Kind: core.KindText, Text: "late"})
	if !errors.Is(err, core.ErrWindowClosed) {
		t.Fatalf("reply after 48 h: %v, want ErrWindowClosed", err)
	}
}

func TestTokenRejectedRefetchedAndRetriedOnce(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Plain, h.acct.Text("o-t", "hi", 1))
	conv := h.conversation("o-t")
	r1 := h.reply(conv.ID, core.Message{Kind: core.KindText, Text: "first"})
	h.waitMessage(r1.ID, "first sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	old := h.api.Token()
	fetches := h.api.TokenFetches()

	h.api.ExpireToken() // WeChat no longer accepts the cached token
	r2 := h.reply(conv.ID, core.Message{Kind: core.KindText, Text: "second"})
	h.waitMessage(r2.ID, "second sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	calls := h.api.CallsTo(wechattest.PathCustomSend)
	if len(calls) != 3 || calls[1].ErrCode != 40001 || calls[1].Token != old || calls[2].ErrCode != 0 || calls[2].Token == old {
		t.Fatalf("send calls = %+v", calls)
	}
	if got := h.api.TokenFetches(); got != fetches+1 {
		t.Fatalf("token fetches = %d, want %d", got, fetches+1)
	}
	for _, c := range h.api.CallsTo(wechattest.PathStableToken) {
		if c.ErrCode != 0 {
			t.Fatalf("stable_token call failed: %+v", c)
		}
	}
	if n := len(h.api.CallsTo(wechattest.PathToken)); n != 0 {
		t.Fatalf("%d calls to the plain token API; the stable one must be used", n)
	}
}

func TestTokenRejectedTwiceIsNotRetriedForever(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Plain, h.acct.Text("o-t2", "hi", 1))
	conv := h.conversation("o-t2")
	h.api.Fail(wechattest.PathCustomSend, wechattest.Failure{ErrCode: 40001}, wechattest.Failure{ErrCode: 42001})
	out := bridge.Outgoing{Message: &core.Message{Kind: core.KindText, Text: "x"}, Conversation: &conv}
	_, err := h.ch.Send(context.Background(), out)
	var perm *bridge.PermanentError
	if err == nil || errors.As(err, &perm) {
		t.Fatalf("Send = %v, want a transient error", err)
	}
	if n := len(h.api.CallsTo(wechattest.PathCustomSend)); n != 2 {
		t.Fatalf("%d send calls, want 2 (one retry)", n)
	}
}

func TestServerErrorThenSuccessDeliveredOnce(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Plain, h.acct.Text("o-5", "hi", 1))
	conv := h.conversation("o-5")
	h.api.Fail(wechattest.PathCustomSend, wechattest.Failure{Status: http.StatusInternalServerError}, wechattest.Failure{ErrCode: -1})
	r := h.reply(conv.ID, core.Message{Kind: core.KindText, Text: "eventually"})
	h.waitMessage(r.ID, "sent after retries", func(m core.Message) bool { return m.Status == core.MsgSent })
	time.Sleep(150 * time.Millisecond)
	if sent := h.api.Sent(); len(sent) != 1 || sent[0].Text.Content != "eventually" {
		t.Fatalf("sent = %+v", sent)
	}
	if n := len(h.api.CallsTo(wechattest.PathCustomSend)); n != 3 {
		t.Fatalf("%d send calls, want 3", n)
	}
}

func TestSlowAPIRespectsDeadline(t *testing.T) {
	h := newHarness(t, options{})
	h.post(wechattest.Plain, h.acct.Text("o-slow", "hi", 1))
	conv := h.conversation("o-slow")
	h.api.Fail(wechattest.PathCustomSend, wechattest.Failure{Delay: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := h.ch.Send(ctx, bridge.Outgoing{Message: &core.Message{Kind: core.KindText, Text: "x"}, Conversation: &conv})
	var perm *bridge.PermanentError
	if err == nil || errors.As(err, &perm) || time.Since(began) > 3*time.Second {
		t.Fatalf("Send = %v after %s, want a transient error at the deadline", err, time.Since(began))
	}
}

func TestSlowMediaBecomesAJob(t *testing.T) {
	h := newHarness(t, options{})
	wechat.SetMediaBudget(h.ch, 100*time.Millisecond)
	h.api.AddMedia("img-slow", wechattest.Media{Type: "image", CType: "image/png", Body: pngImage(t)})
	h.api.Fail(wechattest.PathMediaGet, wechattest.Failure{Delay: 400 * time.Millisecond}, wechattest.Failure{Status: http.StatusBadGateway})
	code, body := h.post(wechattest.Safe, h.acct.Image("o-j", "img-slow", "", 77))
	if code != http.StatusOK || body != "success" {
		t.Fatalf("callback: %d %q", code, body)
	}
	// The job fetches the image (after a 502) and stores the message.
	waitFor(t, "image stored by the job", func() bool {
		cs := h.conversations()
		if len(cs) != 1 {
			return false
		}
		ms := h.messages(cs[0].ID)
		return len(ms) == 1 && ms[0].Kind == core.KindImage && ms[0].Media != nil
	})
	// WeChat's retry of the same callback is a duplicate.
	h.post(wechattest.Safe, h.acct.Image("o-j", "img-slow", "", 77))
	if ms := h.messages(h.conversation("o-j").ID); len(ms) != 1 {
		t.Fatalf("%d messages, want 1", len(ms))
	}
}

func TestRouteConflict(t *testing.T) {
	h := newHarness(t, options{})
	deps := channels.Deps{Service: h.svc, Media: h.media, Logger: quiet}
	same, err := wechat.New("wx2", h.cfg, deps)
	if err != nil {
		t.Fatalf("second instance with the same api_base: %v", err)
	}
	defer same.Close()
	other := h.cfg
	other.APIBase = "https://wechat-proxy.example.com"
	if _, err := wechat.New("wx3", other, deps); !errors.Is(err, wxapi.ErrRouteConflict) {
		t.Fatalf("instance with another api_base: %v, want ErrRouteConflict", err)
	}
}

func TestCheck(t *testing.T) {
	h := newHarness(t, options{})
	if err := h.ch.Check(context.Background()); err != nil {
		t.Fatalf("Check = %v", err)
	}
	bad := h.cfg
	bad.AppSecret = "wrong"
	ch, err := wechat.New("wx-bad", bad, channels.Deps{Service: h.svc, Media: h.media, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	conv := core.Conversation{ID: 1, ExternalID: "o-x"}
	_, err = ch.Send(context.Background(), bridge.Outgoing{Message: &core.Message{Kind: core.KindText, Text: "x"}, Conversation: &conv})
	var perm *bridge.PermanentError
	if !errors.As(err, &perm) || !strings.Contains(perm.Reason, "app_secret") {
		t.Fatalf("Send with a wrong secret = %v", err)
	}
	if err := ch.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "40125") {
		t.Fatalf("Check after a refused token = %v", err)
	}
}

// TestReplayedQueryRefused: the Official Account signs the query, not the
// body. A captured query posted again with another body (here a safe-mode
// callback's query, stripped to plaintext) is refused and stores nothing;
// the same callback again (WeChat's retry) is taken.
func TestReplayedQueryRefused(t *testing.T) {
	h := newHarness(t, options{})
	req, err := h.acct.Request(h.srv.URL, wechattest.Safe, h.acct.Text("o-real", "genuine", 1))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		t.Fatal(err)
	}
	send := func(q url.Values, b []byte) int {
		r := req.Clone(context.Background())
		r.URL.RawQuery = q.Encode()
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		code, _ := h.do(r)
		return code
	}
	q := req.URL.Query()
	for i := range 2 {
		if code := send(q, body); code != http.StatusOK {
			t.Fatalf("genuine callback, delivery %d: HTTP %d", i, code)
		}
	}
	forged := h.acct.Text("o-forged", "forged", 2)
	stripped := url.Values{"signature": {q.Get("signature")}, "timestamp": {q.Get("timestamp")},
		"nonce": {q.Get("nonce")}, "openid": {"o-forged"}}
	if code := send(stripped, forged); code != http.StatusForbidden {
		t.Errorf("captured query, plaintext forged body: HTTP %d, want 403", code)
	}
	stripped.Set("signature", strings.ToUpper(q.Get("signature")))
	if code := send(stripped, forged); code != http.StatusForbidden {
		t.Errorf("captured query in capitals, forged body: HTTP %d, want 403", code)
	}
	if cs := h.conversations(); len(cs) != 1 || cs[0].ExternalID != "o-real" {
		t.Fatalf("conversations = %+v, want o-real's only", cs)
	}
}

// TestURLCheckQueryNotReusable: the URL check's query is signed as a
// callback's is. Copied (from an access log, say) and posted with a
// plaintext body, it is refused and stores nothing; the same URL check
// again is still answered.
func TestURLCheckQueryNotReusable(t *testing.T) {
	h := newHarness(t, options{})
	check, err := h.acct.VerifyRequest(h.srv.URL, "echo-5678")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if code, body := h.do(check.Clone(context.Background())); code != http.StatusOK || body != "echo-5678" {
			t.Fatalf("URL check, time %d: %d %q", i+1, code, body)
		}
	}
	q := check.URL.Query()
	q.Del("echostr")
	q.Set("openid", "o-forged")
	forged := h.acct.Text("o-forged", "forged", 3)
	req, err := http.NewRequest(http.MethodPost, check.URL.Scheme+"://"+check.URL.Host+check.URL.Path+"?"+q.Encode(), bytes.NewReader(forged))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := h.do(req); code != http.StatusForbidden {
		t.Errorf("URL check's query, plaintext forged body: HTTP %d, want 403", code)
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("conversations = %+v, want none", cs)
	}
}

// TestSignatureBeforeBody: an unsigned callback is refused before its body
// is read, however large.
func TestSignatureBeforeBody(t *testing.T) {
	h := newHarness(t, options{})
	req, err := h.acct.Request(h.srv.URL, wechattest.Plain, h.acct.Text("o-1", strings.Repeat("x", wechat.MaxBodyBytes), 1))
	if err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	q.Set("signature", strings.Repeat("0", 40))
	req.URL.RawQuery = q.Encode()
	if code, body := h.do(req); code != http.StatusForbidden {
		t.Fatalf("unsigned oversize callback: HTTP %d %q, want 403", code, body)
	}
}
