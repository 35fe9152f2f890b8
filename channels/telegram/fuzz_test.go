package telegram

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzParseUpdate feeds the update parser what a webhook body could hold,
// and what kefu renders from a parsed update. Seeds are in
// testdata/fuzz/FuzzParseUpdate as well.
func FuzzParseUpdate(f *testing.F) {
	for _, s := range []string{
		`{"update_id":1,"message":{"message_id":7,"date":1700000000,"chat":{"id":42,"type":"private","first_name":"Zhang"},"from":{"id":42,"is_bot":false,"first_name":"Zhang","last_name":"San","username":"zs"},"text":"/start ref"}}`,
		`{"update_id":2,"message":{"message_id":8,"chat":{"id":42,"type":"private"},"photo":[{"file_id":"a","file_unique_id":"u","width":1,"height":1},{"file_id":"b","file_unique_id":"v","width":90,"height":90,"file_size":1000}],"caption":"x"}}`,
		`{"update_id":3,"message":{"message_id":9,"chat":{"id":42,"type":"private"},"location":{"latitude":48.8,"longitude":2.29,"live_period":60}}}`,
		`{"update_id":4,"message":{"message_id":10,"chat":{"id":42,"type":"private"},"contact":{"phone_number":"+1","first_name":"A","user_id":5}}}`,
		`{"update_id":5,"message":{"message_id":11,"chat":{"id":42,"type":"private"},"venue":{"location":{"latitude":1,"longitude":2},"title":"T","address":"A"}}}`,
		`{"update_id":6,"message":{"message_id":12,"chat":{"id":-1001,"type":"supergroup"},"forward_origin":{"type":"user","date":1,"sender_user":{"id":1,"is_bot":false,"first_name":"F"}},"text":"fwd"}}`,
		`{"update_id":7,"edited_message":{"message_id":1,"chat":{"id":1,"type":"private"},"text":"e"}}`,
		`{"update_id":8,"message":{"chat":{"id":"not a number"},"text":"t"}}`,
		`{"update_id":-1}`,
		`[]`,
		`{"update_id":9,"message":{"reply_to_message":{"reply_to_message":{"chat":{"id":1}}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		upd, err := ParseUpdate(body)
		if err != nil {
			if upd != nil {
				t.Fatal("an update and an error")
			}
			return
		}
		if upd.ID <= 0 {
			t.Fatalf("accepted update_id %d", upd.ID)
		}
		if _, err := json.Marshal(upd); err != nil {
			// Only the library's own round trip; nothing kefu relies on.
			t.Logf("re-encoding: %v", err)
		}
		m := upd.Message
		if m == nil {
			return
		}
		name := displayName(m.From, m.Chat)
		if !utf8.ValidString(name) || len(name) > maxNameLen {
			t.Fatalf("display name %q", name)
		}
		_ = isStart(m.Text)
		if len(m.Photo) > 0 {
			_ = largest(m.Photo)
		}
		for _, s := range []string{
			func() string {
				if m.Location != nil {
					return locationText(*m.Location)
				}
				return ""
			}(),
			func() string {
				if m.Contact != nil {
					return contactText(m.Contact)
				}
				return ""
			}(),
			func() string {
				if m.Venue != nil {
					return venueText(m.Venue)
				}
				return ""
			}(),
		} {
			if !utf8.ValidString(s) {
				t.Fatalf("rendered invalid UTF-8: %q", s)
			}
		}
	})
}
