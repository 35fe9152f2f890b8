package whatsapp

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	wt "github.com/kefuhq/kefu/channels/whatsapp/whatsapptest"
)

func TestPlanSkipsWhatItCannotStore(t *testing.T) {
	body := wt.Body(
		wt.Messages(testPhoneID, wt.Customer{Name: "nobody"}, wt.Text("wamid.P1", "no sender ids")),
		wt.Messages(testPhoneID, zhang, wt.Msg{"id": "", "type": "text", "text": map[string]string{"body": "no id"}}),
		wt.Messages(testPhoneID, zhang, wt.Msg{"id": "wamid with space", "type": "text", "text": map[string]string{"body": "x"}}),
		wt.Messages(testPhoneID, wt.Customer{WaID: "+86 138"}, wt.Text("wamid.P2", "bad wa_id and no BSUID")),
		wt.Messages(testPhoneID, zhang, wt.Text("wamid.P3", "   ")),
		wt.Messages(testPhoneID, zhang, wt.Msg{"id": "wamid.P4", "type": "image"}),
		wt.Statuses(testPhoneID, wt.Msg{"id": "", "status": "read"}, wt.Status("wamid.P5", "delivered", "1", time.Unix(1_800_000_000, 0))),
	)
	n, err := ParseNotification(body)
	if err != nil {
		t.Fatal(err)
	}
	b := plan(n, testPhoneID)
	if len(b.messages) != 2 || b.skipped != 5 {
		t.Fatalf("planned %d messages, skipped %d; want 2 and 5: %+v", len(b.messages), b.skipped, b.messages)
	}
	if b.messages[0].text != "[empty WhatsApp message]" || b.messages[1].text != "[Unsupported WhatsApp message: image]" {
		t.Fatalf("renderings: %q, %q", b.messages[0].text, b.messages[1].text)
	}
	if len(b.statuses) != 1 || b.statuses[0].wamid != "wamid.P5" || !b.statuses[0].at.Equal(time.Unix(1_800_000_000, 0)) {
		t.Fatalf("statuses = %+v", b.statuses)
	}
}

func TestClassifyHeaders(t *testing.T) {
	tests := []struct {
		name, header, value string
		want                time.Duration
	}{
		{"Retry-After", "Retry-After", "12", 12 * time.Second},
		{"business use case", "X-Business-Use-Case-Usage", `{"102":[{"type":"whatsapp_business_management","call_count":100,"estimated_time_to_regain_access":3}]}`, 3 * time.Minute},
		{"none", "X-Other", "1", 0},
		{"garbage", "X-Business-Use-Case-Usage", "{", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string][]string{}
			h[tt.header] = []string{tt.value}
			if got := retryAfter(h); got != tt.want {
				t.Fatalf("retryAfter = %s, want %s", got, tt.want)
			}
		})
	}
}

// FuzzParse feeds arbitrary bodies to the webhook parser and checks that
// whatever it accepts is fit to store: a usable wamid, a sender, text that
// is not blank unless media comes with it, and bounded sizes.
func FuzzParse(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add(wt.Body(wt.Messages(testPhoneID, zhang, wt.Text("wamid.1", "hello"), wt.Image("wamid.2", "m", "image/jpeg", "cap"))))
	f.Add(wt.Body(wt.Messages(testPhoneID, wt.Customer{UserID: "US.1"}, wt.Location("wamid.3", 1.5, -2, "x", ""),
		wt.Contacts("wamid.4", wt.Card("A", "1", "a@b")), wt.ButtonReply("wamid.5", "b", "B"), wt.Reaction("wamid.6", "wamid.1", "👍"))))
	f.Add(wt.Body(wt.Statuses(testPhoneID, wt.Status("wamid.7", "read", "1", now), wt.FailedStatus("wamid.8", "1", now, 131047, "x"))))
	f.Add(wt.Entries([]wt.Change{wt.Messages("other", zhang, wt.Unsupported("wamid.9"))}, nil))
	f.Add([]byte(`{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":[{"id":"w","from":"1","type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"response_json":"{}"}}}]}}]}]}`))
	f.Add([]byte(`{"object":"whatsapp_business_account","entry":null}`))
	f.Add([]byte(`{"object":`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := ParseNotification(body)
		if err != nil {
			return
		}
		b := plan(n, testPhoneID)
		for _, in := range b.messages {
			switch {
			case !validID(in.wamid):
				t.Fatalf("accepted wamid %q", in.wamid)
			case in.waID == "" && in.userID == "":
				t.Fatalf("accepted a message without a sender: %+v", in)
			case in.waID != "" && !isPhone(in.waID):
				t.Fatalf("accepted wa_id %q", in.waID)
			case in.userID != "" && isPhone(in.userID):
				t.Fatalf("accepted a BSUID that looks like a phone number: %q", in.userID)
			case in.media == nil && strings.TrimSpace(in.text) == "":
				t.Fatalf("blank text without media: %+v", in)
			case in.media != nil && !validID(in.media.ID):
				t.Fatalf("media without a usable id: %+v", in.media)
			case len(in.text) > maxTextLen || len(in.name) > maxNameLen:
				t.Fatalf("oversize text or name: %d, %d", len(in.text), len(in.name))
			case !utf8.ValidString(in.text) || !utf8.ValidString(in.name):
				t.Fatalf("invalid UTF-8 kept: %q %q", in.text, in.name)
			}
		}
		for _, st := range b.statuses {
			if !validID(st.wamid) || st.status == "" {
				t.Fatalf("accepted status %+v", st)
			}
		}
	})
}
