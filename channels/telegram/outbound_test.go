package telegram_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/core"
)

// customer makes chatID write once (through the webhook) and returns the
// conversation, assigned to the harness's agent.
func (h *harness) customer(chatID int64) core.Conversation {
	h.t.Helper()
	url := h.webhookURL()
	if code, _ := h.post(url, telegramtest.Update(telegramtest.Text(chatID, "hello"))); code != http.StatusOK {
		h.t.Fatalf("HTTP %d", code)
	}
	cs := h.conversations()
	for _, c := range cs {
		if c.ExternalID == telegramtest.ChatIDString(chatID) {
			return c
		}
	}
	h.t.Fatalf("no conversation for chat %d", chatID)
	return core.Conversation{}
}

func TestSendTextImageFile(t *testing.T) {
	h := newHarness(t, options{})
	c := h.customer(42)
	ctx := context.Background()
	img := pngImage(t)
	imgMedia, err := h.media.Save(ctx, bytes.NewReader(img), "screenshot.png")
	if err != nil {
		t.Fatal(err)
	}
	pdf := []byte("%PDF-1.4\n%%EOF\n")
	pdfMedia, err := h.media.Save(ctx, bytes.NewReader(pdf), "refund.pdf")
	if err != nil {
		t.Fatal(err)
	}
	m1 := h.reply(c.ID, core.Message{Kind: core.KindText, Text: "Sorry about that! 😟"})
	m2 := h.reply(c.ID, core.Message{Kind: core.KindImage, Media: &imgMedia, Text: "Is this your parcel?"})
	m3 := h.reply(c.ID, core.Message{Kind: core.KindFile, Media: &pdfMedia})

	sent := h.api.WaitSent(3, 10*time.Second)
	if len(sent) != 3 {
		t.Fatalf("sent %d messages, want 3", len(sent))
	}
	if s := sent[0]; s.Method != "sendMessage" || s.ChatID != 42 || s.Fields["text"] != "Sorry about that! 😟" {
		t.Errorf("first: %+v", s)
	}
	if s := sent[1]; s.Method != "sendPhoto" || s.Fields["caption"] != "Is this your parcel?" ||
		!bytes.Equal(s.Files["photo"].Data, img) || s.Files["photo"].Name != "screenshot.png" {
		t.Errorf("second: %s caption %q file %q (%d bytes)", s.Method, s.Fields["caption"], s.Files["photo"].Name, len(s.Files["photo"].Data))
	}
	if s := sent[2]; s.Method != "sendDocument" || !bytes.Equal(s.Files["document"].Data, pdf) || s.Files["document"].Name != "refund.pdf" {
		t.Errorf("third: %s file %q", s.Method, s.Files["document"].Name)
	}
	for i, m := range []core.Message{m1, m2, m3} {
		want := "42:" + itoa(sent[i].MessageID)
		h.waitMessage(m.ID, "sent with its Telegram id", func(m core.Message) bool {
			return m.Status == core.MsgSent && m.ExternalID == want
		})
	}
}

func TestSendImageRefusedAsPhoto(t *testing.T) {
	h := newHarness(t, options{})
	c := h.customer(42)
	med, err := h.media.Save(context.Background(), bytes.NewReader(pngImage(t)), "wide.png")
	if err != nil {
		t.Fatal(err)
	}
	h.api.FailNext("sendPhoto", telegramtest.Failure{Code: http.StatusBadRequest, Description: "Bad Request: PHOTO_INVALID_DIMENSIONS"})
	m := h.reply(c.ID, core.Message{Kind: core.KindImage, Media: &med})
	sent := h.api.WaitSent(1, 10*time.Second)
	if len(sent) != 1 || sent[0].Method != "sendDocument" || sent[0].Files["document"].Name != "wide.png" {
		t.Fatalf("sent %+v, want the image as a document", sent)
	}
	h.waitMessage(m.ID, "sent", func(m core.Message) bool { return m.Status == core.MsgSent })
}

func TestSendRateLimited(t *testing.T) {
	h := newHarness(t, options{})
	slow := h.customer(42)
	other := h.customer(43)
	// Telegram limits chat 42: retry_after 1 s.
	h.api.FailNext("sendMessage", telegramtest.Failure{Code: http.StatusTooManyRequests,
		Description: "Too Many Requests: retry after 1", RetryAfter: 1})
	m1 := h.reply(slow.ID, core.Message{Kind: core.KindText, Text: "first"})
	calls := h.api.WaitCalls("sendMessage", 1, 10*time.Second)
	if len(calls) != 1 || calls[0].ErrorCode != http.StatusTooManyRequests {
		t.Fatalf("calls = %+v", calls)
	}
	m2 := h.reply(slow.ID, core.Message{Kind: core.KindText, Text: "second"})
	// Another conversation is not held up.
	m3 := h.reply(other.ID, core.Message{Kind: core.KindText, Text: "to the other customer"})
	h.waitMessage(m3.ID, "the other conversation's reply sent", func(m core.Message) bool { return m.Status == core.MsgSent })

	h.waitMessage(m2.ID, "the limited conversation's replies sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	var to42 []telegramtest.Call
	for _, c := range h.api.Calls("sendMessage") {
		if c.ChatID == 42 {
			to42 = append(to42, c)
		}
	}
	if len(to42) != 3 || to42[1].Fields["text"] != "first" || to42[2].Fields["text"] != "second" {
		t.Fatalf("calls to chat 42: %+v", to42)
	}
	// Nothing went to chat 42 before retry_after had passed, and the
	// replies kept their order.
	if gap := to42[1].At.Sub(to42[0].At); gap < time.Second {
		t.Fatalf("retried %s after the 429, before retry_after (1s)", gap)
	}
	if m, _ := h.store.Message(context.Background(), m1.ID); m.Status != core.MsgSent {
		t.Fatalf("first reply: %+v", m)
	}
}

func TestSendPermanentFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(api *telegramtest.Server)
		reason string
	}{
		{"user blocked the bot", func(api *telegramtest.Server) { api.Block(42) }, telegram.ReasonBlocked},
		{"chat not found", func(api *telegramtest.Server) { api.Forget(42) }, telegram.ReasonChatNotFound},
		{"user deleted", func(api *telegramtest.Server) {
			api.FailNext("sendMessage", telegramtest.Failure{Code: http.StatusForbidden, Description: "Forbidden: user is deactivated"})
		}, telegram.ReasonDeactivated},
		{"other bad request", func(api *telegramtest.Server) {
			api.FailNext("sendMessage", telegramtest.Failure{Code: http.StatusBadRequest, Description: "Bad Request: message is too long"})
		}, "Telegram rejected the message: Bad Request: message is too long"},
		{"token revoked", func(api *telegramtest.Server) {
			api.FailNext("sendMessage", telegramtest.Failure{Code: http.StatusUnauthorized, Description: "Unauthorized"})
		}, telegram.ReasonBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, options{})
			c := h.customer(42)
			tc.setup(h.api)
			m := h.reply(c.ID, core.Message{Kind: core.KindText, Text: "hello?"})
			got := h.waitMessage(m.ID, "failed", func(m core.Message) bool { return m.Status == core.MsgFailed })
			if got.FailReason != tc.reason {
				t.Fatalf("reason %q, want %q", got.FailReason, tc.reason)
			}
			if n := len(h.api.Calls("sendMessage")); n != 1 {
				t.Fatalf("%d attempts, want 1", n)
			}
		})
	}
}

func TestSendTooLong(t *testing.T) {
	h := newHarness(t, options{})
	c := h.customer(42)
	m := h.reply(c.ID, core.Message{Kind: core.KindText, Text: strings.Repeat("字", 4097)})
	got := h.waitMessage(m.ID, "failed", func(m core.Message) bool { return m.Status == core.MsgFailed })
	if !strings.Contains(got.FailReason, "4096") {
		t.Fatalf("reason %q", got.FailReason)
	}
	if n := len(h.api.Calls("sendMessage")); n != 0 {
		t.Fatalf("%d calls, want none", n)
	}
}

func TestSendTransientFailures(t *testing.T) {
	h := newHarness(t, options{})
	c := h.customer(42)
	h.api.FailNext("sendMessage",
		telegramtest.Failure{Code: http.StatusInternalServerError},
		telegramtest.Failure{Code: http.StatusBadGateway, Body: "<html>502 Bad Gateway</html>"},
	)
	m := h.reply(c.ID, core.Message{Kind: core.KindText, Text: "eventually"})
	h.waitMessage(m.ID, "sent after retries", func(m core.Message) bool { return m.Status == core.MsgSent })
	calls := h.api.Calls("sendMessage")
	if len(calls) != 3 || !calls[2].OK() {
		t.Fatalf("calls = %+v", calls)
	}
	if sent := h.api.Sent(); len(sent) != 1 {
		t.Fatalf("delivered %d times", len(sent))
	}
}

func TestSendMigratedChat(t *testing.T) {
	h := newHarness(t, options{})
	c := h.customer(42)
	h.api.Migrate(42, -1000042)
	m1 := h.reply(c.ID, core.Message{Kind: core.KindText, Text: "one"})
	h.waitMessage(m1.ID, "sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	m2 := h.reply(c.ID, core.Message{Kind: core.KindText, Text: "two"})
	got := h.waitMessage(m2.ID, "sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	if !strings.HasPrefix(got.ExternalID, "-1000042:") {
		t.Errorf("ExternalID %q, want it in the new chat", got.ExternalID)
	}
	calls := h.api.Calls("sendMessage")
	if len(calls) != 3 || calls[0].ChatID != 42 || calls[0].OK() || calls[1].ChatID != -1000042 || calls[2].ChatID != -1000042 {
		t.Fatalf("calls: %+v", calls)
	}
	// The conversation moved: the next reply went straight to the new
	// chat, and so would any later one.
	conv, err := h.store.Conversation(context.Background(), c.ID)
	if err != nil || conv.ExternalID != "-1000042" {
		t.Fatalf("conversation %+v, %v", conv, err)
	}
}

func TestCheckReportsRejectedToken(t *testing.T) {
	h := newHarness(t, options{})
	c := h.customer(42)
	if err := h.ch.Check(context.Background()); err != nil {
		t.Fatalf("Check = %v before any failure", err)
	}
	h.api.FailNext("sendMessage", telegramtest.Failure{Code: http.StatusUnauthorized, Description: "Unauthorized"})
	m := h.reply(c.ID, core.Message{Kind: core.KindText, Text: "x"})
	h.waitMessage(m.ID, "failed", func(m core.Message) bool { return m.Status == core.MsgFailed })
	if err := h.ch.Check(context.Background()); err == nil {
		t.Fatal("Check = nil after Telegram rejected the token")
	}
	m = h.reply(c.ID, core.Message{Kind: core.KindText, Text: "y"})
	h.waitMessage(m.ID, "sent", func(m core.Message) bool { return m.Status == core.MsgSent })
	if err := h.ch.Check(context.Background()); err != nil {
		t.Fatalf("Check = %v after a call succeeded", err)
	}
}

func itoa(n int) string { return telegramtest.ChatIDString(int64(n)) }
