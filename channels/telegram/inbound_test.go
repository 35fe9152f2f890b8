package telegram_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-telegram/bot/models"

	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/core"
)

// webhookURL serves the harness's channel and returns its webhook URL.
func (h *harness) webhookURL() string {
	srv := httptest.NewServer(h.ch)
	h.t.Cleanup(srv.Close)
	return srv.URL + "/webhooks/tg"
}

func (h *harness) post(url string, u models.Update) (int, models.Update) {
	h.t.Helper()
	code, u, err := h.api.Post(url, secret, u)
	if err != nil {
		h.t.Fatal(err)
	}
	return code, u
}

func TestWebhookSecret(t *testing.T) {
	h := newHarness(t, options{})
	url := h.webhookURL()
	body, _ := json.Marshal(telegramtest.Update(telegramtest.Text(42, "hello")))
	body = bytes.Replace(body, []byte(`"update_id":0`), []byte(`"update_id":5`), 1)
	for _, tc := range []struct {
		name   string
		method string
		secret string // "" sends no header
		body   []byte
		want   int
	}{
		{"no secret", http.MethodPost, "", body, http.StatusUnauthorized},
		{"wrong secret", http.MethodPost, "webhook-secret_124", body, http.StatusUnauthorized},
		{"secret's prefix", http.MethodPost, secret[:5], body, http.StatusUnauthorized},
		{"GET", http.MethodGet, secret, nil, http.StatusMethodNotAllowed},
		{"malformed JSON", http.MethodPost, secret, []byte(`{"update_id":`), http.StatusBadRequest},
		{"no update_id", http.MethodPost, secret, []byte(`{"message":{"text":"hi"}}`), http.StatusBadRequest},
		{"too large", http.MethodPost, secret, bytes.Repeat([]byte(" "), telegram.MaxUpdateBytes+1), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url, bytes.NewReader(tc.body))
			if tc.secret != "" {
				req.Header.Set(telegram.HeaderSecret, tc.secret)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("refused requests stored %d conversations", len(cs))
	}
	// The right secret: stored, then 200.
	code, err := telegramtest.PostRaw(url, secret, body)
	if err != nil || code != http.StatusOK {
		t.Fatalf("good request: HTTP %d, %v", code, err)
	}
	c := h.conversation("42")
	if ms := h.messages(c.ID); len(ms) != 1 || ms[0].Text != "hello" {
		t.Fatalf("messages = %+v", ms)
	}
}

func TestWebhookRefusedInPollingMode(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	code, _ := h.post(h.webhookURL(), telegramtest.Update(telegramtest.Text(42, "hello")))
	if code != http.StatusNotFound {
		t.Fatalf("HTTP %d, want 404", code)
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("stored %d conversations", len(cs))
	}
}

func TestWebhookDuplicate(t *testing.T) {
	h := newHarness(t, options{})
	url := h.webhookURL()
	u := telegramtest.Update(telegramtest.Text(42, "my order is late"))
	code, u := h.post(url, u)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	// Telegram repeats the update (it did not see the 200): stored once.
	for range 2 {
		if code, _ := h.post(url, u); code != http.StatusOK {
			t.Fatalf("repeat: HTTP %d", code)
		}
	}
	c := h.conversation("42")
	if ms := h.messages(c.ID); len(ms) != 1 {
		t.Fatalf("%d messages stored, want 1: %+v", len(ms), ms)
	}
	// The same update_id for another chat's message is a new update (ids
	// restart at random after a quiet week), not a repeat.
	other := telegramtest.Update(telegramtest.Text(43, "hello"))
	other.ID = u.ID
	if code, _ := h.post(url, other); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if ms := h.messages(h.conversation("43").ID); len(ms) != 1 {
		t.Fatalf("other chat: %d messages", len(ms))
	}
}

func TestInboundTypes(t *testing.T) {
	h := newHarness(t, options{})
	url := h.webhookURL()
	img := pngImage(t)
	pdf := []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
	ogg := append([]byte("OggS\x00\x02"), make([]byte, 22)...)
	ogg = append(ogg, []byte("OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00")...)
	mp4 := append([]byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), make([]byte, 64)...)
	exe := append([]byte("MZ\x90\x00\x03\x00\x00\x00\x04\x00"), make([]byte, 100)...)

	small := h.api.AddFile("photos/small.png", []byte("not the one to fetch"))
	large := h.api.AddFile("photos/large.png", img)
	doc := h.api.AddFile("documents/invoice.pdf", pdf)
	voice := h.api.AddFile("voice/v1.oga", ogg)
	video := h.api.AddFile("videos/v1.mp4", mp4)
	program := h.api.AddFile("documents/setup.exe", exe)

	type want struct {
		kind      core.ContentKind
		text      string // exact, or a prefix ending in "…"
		mediaType string
		mediaName string
		data      []byte
	}
	for i, tc := range []struct {
		name string
		edit func(m *models.Message)
		want *want // nil: nothing stored
	}{
		{"text", func(m *models.Message) { m.Text = "Где мой заказ? 🙂" }, &want{kind: core.KindText, text: "Где мой заказ? 🙂"}},
		{"photo: the largest size", func(m *models.Message) {
			m.Photo = []models.PhotoSize{{FileID: small, Width: 4, Height: 3}, {FileID: large, Width: 40, Height: 30, FileSize: len(img)}}
			m.Caption = "broken on arrival"
		}, &want{kind: core.KindImage, text: "broken on arrival", mediaType: "image/png", mediaName: "photo.jpg", data: img}},
		{"document", func(m *models.Message) {
			m.Document = &models.Document{FileID: doc, FileName: "invoice.pdf", MimeType: "application/pdf", FileSize: int64(len(pdf))}
		}, &want{kind: core.KindFile, mediaType: "application/pdf", mediaName: "invoice.pdf", data: pdf}},
		{"voice", func(m *models.Message) { m.Voice = &models.Voice{FileID: voice, Duration: 3} },
			&want{kind: core.KindFile, mediaType: "audio/ogg", mediaName: "voice.ogg", data: ogg}},
		{"video", func(m *models.Message) { m.Video = &models.Video{FileID: video, Width: 320, Height: 240} },
			&want{kind: core.KindFile, mediaType: "video/mp4", mediaName: "video.mp4", data: mp4}},
		{"location", func(m *models.Message) { m.Location = &models.Location{Latitude: 48.85837, Longitude: 2.294481} },
			&want{kind: core.KindText, text: "Location: 48.858370, 2.294481\nhttps://www.openstreetmap.org/?mlat=48.858370&mlon=2.294481#map=16/48.858370/2.294481"}},
		{"venue", func(m *models.Message) {
			loc := models.Location{Latitude: 1.5, Longitude: -2.25}
			m.Location, m.Venue = &loc, &models.Venue{Location: loc, Title: "Shop", Address: "1 Main St"}
		}, &want{kind: core.KindText, text: "Venue: Shop, 1 Main St\nLocation: 1.500000, -2.250000…"}},
		{"contact", func(m *models.Message) {
			m.Contact = &models.Contact{PhoneNumber: "+8613800000000", FirstName: "Li", LastName: "Si", UserID: 99}
		}, &want{kind: core.KindText, text: "Contact: Li Si, +8613800000000 (Telegram user 99)"}},
		{"sticker", func(m *models.Message) { m.Sticker = &models.Sticker{FileID: "s", Emoji: "👍"} },
			&want{kind: core.KindText, text: "[sticker 👍]"}},
		// Not carried, still shown: the agent knows the customer wrote.
		{"dice", func(m *models.Message) { m.Dice = &models.Dice{Emoji: "🎲", Value: 4} },
			&want{kind: core.KindText, text: "[dice 🎲: 4]"}},
		{"poll", func(m *models.Message) { m.Poll = &models.Poll{ID: "p", Question: "Which colour?"} },
			&want{kind: core.KindText, text: "[a poll: Which colour?]"}},
		{"story", func(m *models.Message) { m.Story = &models.Story{ID: 7} },
			&want{kind: core.KindText, text: "[a Telegram story, not shown here]"}},
		{"a file type kefu refuses", func(m *models.Message) {
			m.Document = &models.Document{FileID: program, FileName: "setup.exe", FileSize: int64(len(exe))}
			m.Caption = "please install"
		}, &want{kind: core.KindText, text: "[document setup.exe not kept: kefu does not accept …"}},
		{"a file over the download limit", func(m *models.Message) {
			m.Video = &models.Video{FileID: "huge", FileSize: 30 << 20}
		}, &want{kind: core.KindText, text: "[video not kept: 30 MB, over the 20 MB a bot may download]"}},
		{"a service message", func(m *models.Message) { m.PinnedMessage = nil }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chat := int64(1000 + i)
			m := telegramtest.Private(chat, "Zhang", "San", "zhangsan")
			tc.edit(m)
			if code, _ := h.post(url, telegramtest.Update(m)); code != http.StatusOK {
				t.Fatalf("HTTP %d", code)
			}
			ext := strconv.FormatInt(chat, 10)
			if tc.want == nil {
				if cs, _ := h.store.Conversations(context.Background(), core.ConversationFilter{Channel: "tg", ExternalID: ext}); len(cs) != 0 {
					t.Fatalf("stored a conversation: %+v", cs)
				}
				return
			}
			c := h.conversation(ext)
			ms := h.messages(c.ID)
			if len(ms) != 1 {
				t.Fatalf("%d messages, want 1: %+v", len(ms), ms)
			}
			got, w := ms[0], tc.want
			if got.Kind != w.kind || got.SenderKind != core.SenderContact {
				t.Errorf("kind %s from %s, want %s from the contact", got.Kind, got.SenderKind, w.kind)
			}
			if prefix, ok := strings.CutSuffix(w.text, "…"); ok {
				if !strings.HasPrefix(got.Text, prefix) {
					t.Errorf("text %q, want it to start with %q", got.Text, prefix)
				}
			} else if got.Text != w.text {
				t.Errorf("text %q, want %q", got.Text, w.text)
			}
			if w.mediaType == "" {
				if got.Media != nil {
					t.Errorf("media %+v, want none", got.Media)
				}
				return
			}
			if got.Media == nil || got.Media.Type != w.mediaType || got.Media.Name != w.mediaName {
				t.Fatalf("media %+v, want %s named %s", got.Media, w.mediaType, w.mediaName)
			}
			rc, _, err := h.media.Open(context.Background(), got.Media.Key)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if data, _ := io.ReadAll(rc); !bytes.Equal(data, w.data) {
				t.Errorf("stored file differs from the one sent (%d bytes, want %d)", len(data), len(w.data))
			}
		})
	}
	// Every customer got a name from Telegram's profile.
	for _, c := range h.conversations() {
		if ct, err := h.store.Contact(context.Background(), c.ContactID); err != nil || ct.Name != "Zhang San" {
			t.Errorf("contact %+v, %v", ct, err)
		}
	}
}

func TestInboundIgnored(t *testing.T) {
	h := newHarness(t, options{})
	url := h.webhookURL()
	group := telegramtest.Text(-100123, "hello group")
	group.Chat.Type, group.Chat.Title = models.ChatTypeGroup, "Fans"
	super := telegramtest.Text(-100124, "hello supergroup")
	super.Chat.Type = models.ChatTypeSupergroup
	fromBot := telegramtest.Text(55, "beep")
	fromBot.From.IsBot = true
	for _, u := range []models.Update{
		telegramtest.Update(group),
		telegramtest.Update(super),
		{ChannelPost: &models.Message{Chat: models.Chat{ID: -100125, Type: models.ChatTypeChannel}, Text: "news"}},
		{EditedMessage: telegramtest.Text(42, "edited")},
		telegramtest.Update(fromBot),
	} {
		// Answered 200 (or Telegram would retry), stored nothing.
		if code, _ := h.post(url, u); code != http.StatusOK {
			t.Fatalf("HTTP %d for %+v", code, u)
		}
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("stored %d conversations", len(cs))
	}
}

func TestDisplayName(t *testing.T) {
	h := newHarness(t, options{})
	url := h.webhookURL()
	for chat, who := range map[int64][3]string{
		1: {"Zhang", "", "zhangsan"},
		2: {"", "", "lisi"},
		3: {"  Wang ", " Wu", ""},
	} {
		m := telegramtest.Private(chat, who[0], who[1], who[2])
		m.Text = "hi"
		h.post(url, telegramtest.Update(m))
	}
	for chat, want := range map[string]string{"1": "Zhang", "2": "@lisi", "3": "Wang Wu"} {
		ct, err := h.store.Contact(context.Background(), h.conversation(chat).ContactID)
		if err != nil || ct.Name != want {
			t.Errorf("chat %s: contact %+v, %v; want name %q", chat, ct, err, want)
		}
	}
}

func TestStartGreeting(t *testing.T) {
	const greeting = "Hi! Tell us what you need and an agent will answer here."
	h := newHarness(t, options{greeting: greeting})
	url := h.webhookURL()
	code, start := h.post(url, telegramtest.Update(telegramtest.Text(42, "/start")))
	if code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	sent := h.api.WaitSent(1, 10*time.Second)
	if len(sent) != 1 || sent[0].Method != "sendMessage" || sent[0].Fields["text"] != greeting || sent[0].ChatID != 42 {
		t.Fatalf("sent %+v, want the greeting to chat 42", sent)
	}
	c := h.conversation("42")
	ms := h.messages(c.ID)
	if len(ms) != 2 || ms[0].Text != "/start" || ms[1].SenderKind != core.SenderBot || ms[1].Text != greeting {
		t.Fatalf("messages = %+v", ms)
	}
	h.waitMessage(ms[1].ID, "greeting marked sent", func(m core.Message) bool { return m.Status == core.MsgSent })

	// The same update again (a retry): neither stored nor greeted twice.
	h.post(url, start)
	// /start with a deep-link payload, and /start@bot, greet again.
	h.post(url, telegramtest.Update(telegramtest.Text(42, "/start ref-campaign")))
	h.post(url, telegramtest.Update(telegramtest.Text(42, "/start@kefu_test_bot")))
	h.post(url, telegramtest.Update(telegramtest.Text(42, "/started is not the command")))
	if got := h.api.WaitSent(3, 10*time.Second); len(got) != 3 {
		t.Fatalf("%d greetings sent, want 3", len(got))
	}
	time.Sleep(100 * time.Millisecond) // a fourth would have been sent by now
	if got := h.api.Sent(); len(got) != 3 {
		t.Fatalf("%d greetings sent, want 3", len(got))
	}
	if ms := h.messages(c.ID); len(ms) != 7 {
		t.Fatalf("%d messages, want 4 from the customer and 3 greetings: %+v", len(ms), ms)
	}
}

// With nobody online, a new customer's /start is greeted first, then told
// that nobody is there: the greeting comes before the offline reply.
func TestStartGreetingBeforeTheOfflineReply(t *testing.T) {
	const greeting, offline = "Welcome! How can we help?", "We are away; we will answer as soon as we are back."
	h := newHarness(t, options{greeting: greeting, offline: offline, noAgent: true})
	h.post(h.webhookURL(), telegramtest.Update(telegramtest.Text(42, "/start")))
	var texts []string
	for _, m := range h.messages(h.conversation("42").ID) {
		texts = append(texts, m.Text)
	}
	if want := []string{"/start", greeting, offline}; !slices.Equal(texts, want) {
		t.Fatalf("the conversation reads %q, want %q", texts, want)
	}
	sent := h.api.WaitSent(2, 10*time.Second)
	if len(sent) != 2 || sent[0].Fields["text"] != greeting || sent[1].Fields["text"] != offline {
		t.Fatalf("sent %+v, want the greeting, then the offline reply", sent)
	}
}

func TestStartWithoutGreeting(t *testing.T) {
	h := newHarness(t, options{})
	h.post(h.webhookURL(), telegramtest.Update(telegramtest.Text(42, "/start")))
	if ms := h.messages(h.conversation("42").ID); len(ms) != 1 {
		t.Fatalf("messages = %+v", ms)
	}
	time.Sleep(100 * time.Millisecond)
	if sent := h.api.Sent(); len(sent) != 0 {
		t.Fatalf("sent %+v without a greeting configured", sent)
	}
}

func TestInboundFileFetchRetried(t *testing.T) {
	h := newHarness(t, options{})
	url := h.webhookURL()
	img := pngImage(t)
	id := h.api.AddFile("photos/p.png", img)
	m := telegramtest.Private(42, "Zhang", "San", "")
	m.Photo = []models.PhotoSize{{FileID: id, Width: 40, Height: 30}}
	// Telegram's file service fails: not stored, 5xx, so Telegram retries.
	h.api.FailNext("getFile", telegramtest.Failure{Code: http.StatusInternalServerError})
	code, u := h.post(url, telegramtest.Update(m))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("HTTP %d, want 503", code)
	}
	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("stored %d conversations", len(cs))
	}
	if code, _ := h.post(url, u); code != http.StatusOK {
		t.Fatalf("retry: HTTP %d", code)
	}
	ms := h.messages(h.conversation("42").ID)
	if len(ms) != 1 || ms[0].Kind != core.KindImage || ms[0].Media.Preview == "" {
		t.Fatalf("messages = %+v", ms)
	}
}
