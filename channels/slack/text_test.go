package slack_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kefuhq/kefu/channels/slack"
	"github.com/kefuhq/kefu/channels/slack/slacktest"
)

func TestPlainText(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "hello", "hello"},
		{"escapes", "a &lt;b&gt; &amp;amp; c", "a <b> &amp; c"},
		{"labelled link", "see <https://x.example/a?b=1&amp;c=2|the page>", "see the page (https://x.example/a?b=1&c=2)"},
		{"bare link", "<https://x.example/>", "https://x.example/"},
		{"link labelled with itself", "<https://x.example|x.example>", "https://x.example"},
		{"mailto", "<mailto:a@b.example|a@b.example>", "a@b.example"},
		{"user", "thanks <@U0BOB> and <@U0ANN|ann>", "thanks @U0BOB and @ann"},
		{"channel", "ask in <#C0GEN|general>", "ask in #general"},
		{"special", "<!here> <!subteam^S0|@support> <!date^1392734382^{date}|Feb 18>", "@here @support Feb 18"},
		{"unclosed", "a < b &lt; c", "a < b < c"},
		{"empty", "", ""},
		{"CJK", "你好 <@U1|张三>", "你好 @张三"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slack.PlainText(tt.in); got != tt.want {
				t.Fatalf("PlainText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseEvent(t *testing.T) {
	ev, err := slack.ParseEvent(slacktest.Event{EventID: "Ev1", Channel: "C1", User: "U1", Text: "hi", TS: "2.000001", ThreadTS: "1.000001"}.Payload())
	if err != nil {
		t.Fatal(err)
	}
	m := ev.Message
	if ev.Type != "event_callback" || ev.EventID != "Ev1" || m == nil || m.Channel != "C1" || m.User != "U1" || m.Text != "hi" ||
		m.TimeStamp != "2.000001" || m.ThreadTimeStamp != "1.000001" {
		t.Fatalf("ParseEvent = %+v %+v", ev, m)
	}
	ev, err = slack.ParseEvent(slacktest.URLVerification("abc"))
	if err != nil || ev.Type != "url_verification" || ev.Challenge != "abc" {
		t.Fatalf("url_verification: %+v %v", ev, err)
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add(slacktest.Event{Channel: "C1", User: "U1", Text: "hi", ThreadTS: "1.1"}.Payload())
	f.Add(slacktest.Event{Channel: "C1", BotID: "B1", SubType: "bot_message", Text: "hi"}.Payload())
	f.Add(slacktest.URLVerification("x"))
	f.Add([]byte(`{"type":"event_callback","event_id":"E","event":{"type":"message","subtype":"message_changed","message":{"text":"x"}}}`))
	f.Add([]byte(`{"type":"event_callback","event_id":"E","event":{"type":"reaction_added"}}`))
	f.Add([]byte(`{"type":"event_callback","event_id":"E","event":null}`))
	f.Add([]byte(`{"type":`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := slack.ParseEvent(body)
		if err != nil {
			return
		}
		switch ev.Type {
		case "url_verification":
			if ev.Challenge == "" {
				t.Fatal("url_verification accepted without a challenge")
			}
		case "event_callback":
			if ev.EventID == "" {
				t.Fatal("event_callback accepted without an event_id")
			}
		default:
			if ev.Message != nil {
				t.Fatalf("a %q event carries a message", ev.Type)
			}
		}
	})
}

func FuzzPlainText(f *testing.F) {
	for _, s := range []string{"hello", "<https://a|b>", "&lt;&gt;&amp;", "<@U1|x>", "<!here>", "<<>>", "a<b|c", "你好"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := slack.PlainText(s)
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("PlainText(%q) = %q: invalid UTF-8", s, out)
		}
		if !strings.ContainsAny(s, "<&") && out != s {
			t.Fatalf("PlainText(%q) = %q changed text without markup", s, out)
		}
	})
}
