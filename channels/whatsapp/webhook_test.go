package whatsapp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	wt "github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
	"github.com/kefuhq/kefu/core"
)

var zhang = wt.Customer{WaID: "8613800138000", UserID: "CN.8216553094712345", Name: "Zhang San"}

func TestVerify(t *testing.T) {
	body := []byte(`{"object":"whatsapp_business_account","entry":[]}`)
	good := wt.Sign(testSecret, body) // the fake signs independently of Sign
	if Sign(testSecret, body) != good {
		t.Fatalf("Sign = %s, want %s", Sign(testSecret, body), good)
	}
	tests := []struct {
		name   string
		header string
		body   []byte
		want   error
	}{
		{"good", good, body, nil},
		{"good with spaces", " " + good + " ", body, nil},
		{"wrong secret", wt.Sign("other", body), body, ErrBadSignature},
		{"tampered body", good, []byte(`{"object":"whatsapp_business_account","entry":[{}]}`), ErrBadSignature},
		{"missing", "", body, ErrNoSignature},
		{"no prefix", strings.TrimPrefix(good, "sha256="), body, ErrNoSignature},
		{"sha1", "sha1=" + strings.TrimPrefix(good, "sha256="), body, ErrNoSignature},
		{"not hex", "sha256=zz", body, ErrNoSignature},
		{"short", good[:20], body, ErrNoSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(testSecret, tt.header, tt.body); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestWebhookRejectsBadRequestsAndStoresNothing(t *testing.T) {
	h := newHarness(t)
	good := wt.Body(wt.Messages(testPhoneID, zhang, wt.Text("wamid.A1", "hello")))
	do := func(name string, req *http.Request, want int) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: HTTP %d (%s), want %d", name, resp.StatusCode, b, want)
		}
	}
	signed := func(body []byte, sig string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, h.web.URL, bytes.NewReader(body))
		if sig != "" {
			req.Header.Set(HeaderSignature, sig)
		}
		return req
	}
	do("unsigned", signed(good, ""), http.StatusUnauthorized)
	do("malformed signature", signed(good, "sha256=nothex"), http.StatusUnauthorized)
	do("wrong secret", signed(good, wt.Sign("not-the-secret", good)), http.StatusForbidden)
	do("signature of another body", signed(good, wt.Sign(testSecret, []byte("{}"))), http.StatusForbidden)
	bad := []byte(`{"object":`)
	do("malformed JSON", signed(bad, wt.Sign(testSecret, bad)), http.StatusBadRequest)
	other := []byte(`{"object":"page","entry":[]}`)
	do("another object", signed(other, wt.Sign(testSecret, other)), http.StatusBadRequest)
	big := append([]byte(`{"object":"whatsapp_business_account","x":"`), bytes.Repeat([]byte("x"), MaxBodyBytes)...)
	big = append(big, `"}`...)
	do("oversize", signed(big, wt.Sign(testSecret, big)), http.StatusRequestEntityTooLarge)
	put, _ := http.NewRequest(http.MethodPut, h.web.URL, bytes.NewReader(good))
	do("PUT", put, http.StatusMethodNotAllowed)

	if cs := h.conversations(); len(cs) != 0 {
		t.Fatalf("bad requests stored %d conversations", len(cs))
	}
	// The good one goes through.
	do("good", signed(good, wt.Sign(testSecret, good)), http.StatusOK)
	if cs := h.conversations(); len(cs) != 1 {
		t.Fatalf("%d conversations after the good request, want 1", len(cs))
	}
}

func TestHandshake(t *testing.T) {
	h := newHarness(t)
	get := func(q url.Values) (int, string) {
		t.Helper()
		resp, err := http.Get(h.web.URL + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	q := func(mode, token, challenge string) url.Values {
		v := url.Values{}
		v.Set("hub.mode", mode)
		v.Set("hub.verify_token", token)
		v.Set("hub.challenge", challenge)
		return v
	}
	if code, body := get(q("subscribe", testVerify, "1158201444")); code != http.StatusOK || body != "1158201444" {
		t.Fatalf("good handshake: HTTP %d %q, want 200 and the raw challenge", code, body)
	}
	for name, v := range map[string]url.Values{
		"wrong token":  q("subscribe", "guess", "1"),
		"empty token":  q("subscribe", "", "1"),
		"wrong mode":   q("unsubscribe", testVerify, "1"),
		"no challenge": q("subscribe", testVerify, ""),
		"nothing":      {},
	} {
		if code, body := get(v); code != http.StatusForbidden || strings.Contains(body, "1158201444") {
			t.Errorf("%s: HTTP %d %q, want 403", name, code, body)
		}
	}
}

func TestDuplicatesStoredOnce(t *testing.T) {
	h := newHarness(t)
	h.api.AddMedia("media-1", "image/jpeg", jpegSample(t))
	msgs := []wt.Msg{wt.Text("wamid.D1", "hello"), wt.Image("wamid.D2", "media-1", "image/jpeg", "my order")}
	h.say(zhang, msgs...)
	// Meta retries the same notification, and once more after kefu forgot
	// what it recently stored (another node, a restart).
	h.say(zhang, wt.Text("wamid.D1", "hello"), wt.Image("wamid.D2", "media-1", "image/jpeg", "my order"))
	h.ch.seen = newRecent[struct{}](10, 0)
	h.say(zhang, wt.Text("wamid.D1", "hello"), wt.Image("wamid.D2", "media-1", "image/jpeg", "my order"))
	// One POST holding the same message twice.
	h.say(zhang, wt.Text("wamid.D3", "twice"), wt.Text("wamid.D3", "twice"))

	c := h.only()
	ms := h.customerMessages(c.ID)
	if len(ms) != 3 {
		t.Fatalf("%d customer messages, want 3: %+v", len(ms), ms)
	}
	if ms[0].Text != "hello" || ms[1].Kind != core.KindImage || ms[2].Text != "twice" {
		t.Fatalf("messages = %+v", ms)
	}
	// The duplicate's media was fetched again and dropped: only one file is kept.
	if files, names := h.mediaFiles(); files != 1 {
		t.Fatalf("%d media files kept, want 1 (%v)", files, names)
	}
}

// mediaFiles counts the stored files, previews aside, and lists every name.
func (h *harness) mediaFiles() (int, []string) {
	h.t.Helper()
	var files int
	var names []string
	err := filepath.WalkDir(h.mediaPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".tmp" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			names = append(names, d.Name())
			if !strings.Contains(d.Name(), ".preview.") {
				files++
			}
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return files, names
}

// lostAnswerStore's Ingest commits and then, while fail is set, reports an
// error: the connection to the database dropped before the answer came.
type lostAnswerStore struct {
	core.Store
	fail atomic.Bool
}

func (s *lostAnswerStore) Ingest(ctx context.Context, in core.Inbound) (core.Ingested, error) {
	res, err := s.Store.Ingest(ctx, in)
	if err == nil && s.fail.Load() {
		return core.Ingested{}, errors.New("store: connection reset by peer")
	}
	return res, err
}

// TestMediaKeptWhenTheWriteMayHaveCommitted: after a store error that
// leaves the write's fate unknown, the fetched file stays (a stored message
// may point at it); Meta's retry is then a duplicate, whose own copy goes.
func TestMediaKeptWhenTheWriteMayHaveCommitted(t *testing.T) {
	var lost *lostAnswerStore
	h := newHarness(t, func(s core.Store) core.Store {
		lost = &lostAnswerStore{Store: s}
		return lost
	})
	h.api.AddMedia("media-1", "image/jpeg", jpegSample(t))
	body := wt.Body(wt.Messages(testPhoneID, zhang, wt.Image("wamid.L1", "media-1", "image/jpeg", "my order")))
	lost.fail.Store(true)
	if code := h.post(body); code < 500 {
		t.Fatalf("webhook after a lost answer: HTTP %d, want a 5xx for Meta to retry", code)
	}
	lost.fail.Store(false)
	if code := h.post(body); code != http.StatusOK {
		t.Fatalf("Meta's retry: HTTP %d", code)
	}
	ms := h.customerMessages(h.only().ID)
	if len(ms) != 1 || ms[0].Media == nil {
		t.Fatalf("messages = %+v", ms)
	}
	rc, _, err := h.media.Open(h.ctx, ms[0].Media.Key)
	if err != nil {
		t.Fatalf("the stored message's file: %v", err)
	}
	rc.Close()
	if files, names := h.mediaFiles(); files != 1 {
		t.Fatalf("%d media files kept, want 1 (%v)", files, names)
	}
}

func TestBatchedNotification(t *testing.T) {
	h := newHarness(t)
	li := wt.Customer{WaID: "8613900139000", Name: "Li Si"}
	body := wt.Entries(
		[]wt.Change{
			wt.Messages(testPhoneID, zhang, wt.Text("wamid.B1", "first"), wt.Text("wamid.B2", "second")),
			wt.Messages(testPhoneID, li, wt.Text("wamid.B3", "from Li")),
		},
		[]wt.Change{
			wt.Messages(testPhoneID, zhang, wt.Text("wamid.B4", "third")),
			// Another number of the same business account: not this channel's.
			wt.Messages("999999999", zhang, wt.Text("wamid.B5", "to the other number")),
		},
	)
	if code := h.post(body); code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	cs := h.conversations()
	if len(cs) != 2 {
		t.Fatalf("%d conversations, want 2", len(cs))
	}
	var texts []string
	for _, m := range h.customerMessages(cs[0].ID) {
		texts = append(texts, m.Text)
	}
	if strings.Join(texts, ",") != "first,second,third" || cs[0].ExternalID != zhang.WaID {
		t.Fatalf("Zhang's conversation %+v: %v", cs[0], texts)
	}
	if ms := h.customerMessages(cs[1].ID); len(ms) != 1 || ms[0].Text != "from Li" || cs[1].ExternalID != li.WaID {
		t.Fatalf("Li's conversation %+v: %+v", cs[1], ms)
	}
	contact, err := h.store.Contact(h.ctx, cs[0].ContactID)
	if err != nil || contact.Name != "Zhang San" {
		t.Fatalf("contact = %+v, %v; want the profile name", contact, err)
	}
}

func TestInboundTypes(t *testing.T) {
	h := newHarness(t)
	h.api.AddMedia("m-img", "image/jpeg", jpegSample(t))
	h.api.AddMedia("m-voice", "audio/ogg; codecs=opus", oggSample())
	h.api.AddMedia("m-video", "video/mp4", mp4Sample())
	h.api.AddMedia("m-doc", "application/pdf", pdfSample())
	webp, err := os.ReadFile("../../media/testdata/large.lossy.webp")
	if err != nil {
		t.Fatal(err)
	}
	h.api.AddMedia("m-sticker", "image/webp", webp)
	h.api.AddMedia("m-exe", "application/pdf", []byte("MZ\x90\x00 this is a program, not a pdf"))

	// A message kefu sent, for the reaction to quote.
	h.say(zhang, wt.Text("wamid.T0", "hi"))
	c := h.only()
	sent := h.deliver(h.reply(c.ID, "Your parcel left the warehouse this morning.").ID)

	tests := []struct {
		name     string
		msg      wt.Msg
		kind     core.ContentKind
		text     string // want exactly
		mimeType string // want for media
		filename string
	}{
		{"text", wt.Text("wamid.T1", "Where is my order?"), core.KindText, "Where is my order?", "", ""},
		{"image", wt.Image("wamid.T2", "m-img", "image/jpeg", "the box"), core.KindImage, "the box", "image/jpeg", ""},
		{"voice", wt.Audio("wamid.T3", "m-voice", "audio/ogg; codecs=opus", true), core.KindFile, "", "audio/ogg", ""},
		{"video", wt.Video("wamid.T4", "m-video", "video/mp4", "unboxing"), core.KindFile, "unboxing", "video/mp4", ""},
		{"document", wt.Document("wamid.T5", "m-doc", "application/pdf", "invoice.pdf", "see attached"), core.KindFile, "see attached", "application/pdf", "invoice.pdf"},
		{"sticker", wt.Sticker("wamid.T6", "m-sticker", false), core.KindImage, "", "image/webp", ""},
		{"location", wt.Location("wamid.T7", 31.2304, 121.4737, "Office", "1 Nanjing Rd"), core.KindText,
			"[Location] Office, 1 Nanjing Rd (31.2304, 121.4737) https://maps.google.com/?q=31.2304,121.4737", "", ""},
		{"contacts", wt.Contacts("wamid.T8", wt.Card("Wang Wu", "+86 138 0000 0001", "wang@example.com"), wt.Card("Zhao Liu", "", "")), core.KindText,
			"[Contact] Wang Wu, +86 138 0000 0001, wang@example.com\n[Contact] Zhao Liu", "", ""},
		{"button reply", wt.ButtonReply("wamid.T9", "yes-1", "Yes, please"), core.KindText, "[Button] Yes, please", "", ""},
		{"list reply", wt.ListReply("wamid.T10", "row-2", "Refund", "Money back to the card"), core.KindText, "[List] Refund — Money back to the card", "", ""},
		{"template quick reply", wt.QuickReply("wamid.T11", "Talk to an agent", "REOPEN"), core.KindText, "[Button] Talk to an agent", "", ""},
		{"reaction", wt.Reaction("wamid.T12", sent.ExternalID, "👍"), core.KindText, `[Reaction] 👍 to "Your parcel left the warehouse this morning."`, "", ""},
		{"reaction to another message", wt.Reaction("wamid.T13", "wamid.unknown", "❤️"), core.KindText, "[Reaction] ❤️", "", ""},
		{"reaction removed", wt.Reaction("wamid.T14", sent.ExternalID, ""), core.KindText, "[Reaction] removed", "", ""},
		{"unsupported", wt.Unsupported("wamid.T15"), core.KindText, "[Unsupported WhatsApp message: unsupported (Message type unknown)]", "", ""},
		{"media of a refused type", wt.Document("wamid.T16", "m-exe", "application/pdf", "x.pdf", "run me"), core.KindText,
			"[document not kept: file type not allowed]\nrun me", "", ""},
		{"expired media", wt.Image("wamid.T17", "m-gone", "image/jpeg", ""), core.KindText,
			"[image not kept: WhatsApp would not hand it over]", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.say(zhang, tt.msg)
			ms := h.customerMessages(c.ID)
			m := ms[len(ms)-1]
			if m.DedupKey != core.ProviderKey(testName, tt.msg["id"].(string)) {
				t.Fatalf("last message is %q, not this one", m.DedupKey)
			}
			if m.Kind != tt.kind || m.Text != tt.text {
				t.Fatalf("stored %s %q, want %s %q", m.Kind, m.Text, tt.kind, tt.text)
			}
			if tt.mimeType == "" {
				if m.Media != nil {
					t.Fatalf("unexpected media %+v", m.Media)
				}
				return
			}
			if m.Media == nil || m.Media.Type != tt.mimeType || m.Media.Size == 0 {
				t.Fatalf("media = %+v, want %s", m.Media, tt.mimeType)
			}
			if tt.filename != "" && m.Media.Name != tt.filename {
				t.Fatalf("media name %q, want %q", m.Media.Name, tt.filename)
			}
			rc, size, err := h.media.Open(h.ctx, m.Media.Key)
			if err != nil || size != m.Media.Size {
				t.Fatalf("stored media: %v (size %d)", err, size)
			}
			rc.Close()
		})
	}
	// The media downloads carried the access token.
	for _, call := range h.api.Calls() {
		if call.Bearer != testToken {
			t.Errorf("%s %s without the token", call.Method, call.Path)
		}
	}
}

func TestIdentityKeyedOnPhoneAndBSUID(t *testing.T) {
	h := newHarness(t)
	// Before the BSUID rollout: the phone number only.
	old := wt.Customer{WaID: "447700900001", Name: "Ann"}
	h.say(old, wt.Text("wamid.I1", "one"))
	// Both ids: the BSUID is bound to the phone number.
	h.say(wt.Customer{WaID: old.WaID, UserID: "GB.1502576394655843", Name: "Ann"}, wt.Text("wamid.I2", "two"))
	// A username hides the phone number: the BSUID alone still finds Ann.
	h.say(wt.Customer{UserID: "GB.1502576394655843", Username: "ann.b"}, wt.Text("wamid.I3", "three"))

	// A customer first seen without a phone number is keyed on the BSUID,
	// and stays so when the number appears.
	bo := wt.Customer{UserID: "US.13491208655302741918", Username: "bo"}
	h.say(bo, wt.Text("wamid.I4", "hi from bo"))
	h.say(wt.Customer{WaID: "15551230000", UserID: bo.UserID, Name: "Bo"}, wt.Text("wamid.I5", "number shown"))

	cs := h.conversations()
	if len(cs) != 2 {
		t.Fatalf("%d conversations, want 2: %+v", len(cs), cs)
	}
	if cs[0].ExternalID != old.WaID || len(h.customerMessages(cs[0].ID)) != 3 {
		t.Fatalf("Ann's conversation %+v with %d messages", cs[0], len(h.customerMessages(cs[0].ID)))
	}
	if cs[1].ExternalID != bo.UserID || len(h.customerMessages(cs[1].ID)) != 2 {
		t.Fatalf("Bo's conversation %+v", cs[1])
	}
	// A new node (empty cache) decides the same way.
	h.ch.aliases = newRecent[string](10, 0)
	h.say(wt.Customer{UserID: "GB.1502576394655843"}, wt.Text("wamid.I6", "four"))
	if n := len(h.conversations()); n != 2 {
		t.Fatalf("%d conversations after a cold cache, want 2", n)
	}

	// Replies go to the phone number through "to", to a BSUID through "recipient".
	h.deliver(h.reply(cs[0].ID, "hello Ann").ID)
	h.deliver(h.reply(cs[1].ID, "hello Bo").ID)
	sent := h.api.Sent()
	if len(sent) != 2 {
		t.Fatalf("%d sent", len(sent))
	}
	if m := sent[0].Message; m.To != old.WaID || m.Recipient != "" {
		t.Errorf("reply to Ann addressed to=%q recipient=%q", m.To, m.Recipient)
	}
	if m := sent[1].Message; m.To != "" || m.Recipient != bo.UserID {
		t.Errorf("reply to Bo addressed to=%q recipient=%q", m.To, m.Recipient)
	}
}

func TestFailedPartIsRetried(t *testing.T) {
	h := newHarness(t)
	h.api.AddMedia("m-1", "image/jpeg", jpegSample(t))
	// The media lookup fails for a while: the notification is answered 503
	// and what follows the failed message waits, so that order holds.
	h.api.FailMediaNext(wt.ServerError)
	body := wt.Body(wt.Messages(testPhoneID, zhang,
		wt.Text("wamid.F1", "first"), wt.Image("wamid.F2", "m-1", "image/jpeg", "second"), wt.Text("wamid.F3", "third")))
	if code := h.post(body); code != http.StatusServiceUnavailable {
		t.Fatalf("with the media lookup failing: HTTP %d, want 503", code)
	}
	if ms := h.customerMessages(h.only().ID); len(ms) != 1 || ms[0].Text != "first" {
		t.Fatalf("after the failure: %+v, want only the first message", ms)
	}
	// Meta retries the whole notification: nothing is doubled, order holds.
	if code := h.post(body); code != http.StatusOK {
		t.Fatalf("retry: HTTP %d", code)
	}
	var got []string
	for _, m := range h.customerMessages(h.only().ID) {
		got = append(got, string(m.Kind)+":"+m.Text)
	}
	if strings.Join(got, ",") != "text:first,image:second,text:third" {
		t.Fatalf("after the retry: %v", got)
	}
	// A closed store: 503 as well.
	h.store.Close()
	if code := h.post(wt.Body(wt.Messages(testPhoneID, zhang, wt.Text("wamid.F4", "are you there?")))); code != http.StatusServiceUnavailable {
		t.Fatalf("with the store closed: HTTP %d, want 503", code)
	}
}

// A text of NUL characters alone (nothing a store keeps) is stored as an
// empty message, and the messages after it in the same POST are stored:
// before, the POST was answered 503 for as long as Meta retried it.
func TestUnstorableTextDoesNotHoldUpThePost(t *testing.T) {
	h := newHarness(t)
	h.say(zhang, wt.Text("wamid.N1", "\x00\x00"), wt.Text("wamid.N2", "my order?"))
	var texts []string
	for _, m := range h.customerMessages(h.only().ID) {
		texts = append(texts, m.Text)
	}
	if !slices.Equal(texts, []string{"[empty WhatsApp message]", "my order?"}) {
		t.Fatalf("stored %q", texts)
	}
}
