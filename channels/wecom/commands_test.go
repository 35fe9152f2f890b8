package wecom_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kefuhq/kefu/channels/wecom"
	"github.com/kefuhq/kefu/channels/wecom/wecomtest"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in   string
		want wecom.Command
	}{
		{"hello", wecom.Command{Op: wecom.OpReply, Text: "hello"}},
		{"  hello \n", wecom.Command{Op: wecom.OpReply, Text: "hello"}},
		{"", wecom.Command{Op: wecom.OpEmpty}},
		{"\u3000 ", wecom.Command{Op: wecom.OpEmpty}},
		{"#123 hi there", wecom.Command{Op: wecom.OpAnswer, Conv: 123, Text: "hi there"}},
		{"#123\nline one\nline two", wecom.Command{Op: wecom.OpAnswer, Conv: 123, Text: "line one\nline two"}},
		{"＃7　你好", wecom.Command{Op: wecom.OpAnswer, Conv: 7, Text: "你好"}},
		{"#123", wecom.Command{Op: wecom.OpSelect, Conv: 123}},
		{"#123 /not a command", wecom.Command{Op: wecom.OpAnswer, Conv: 123, Text: "/not a command"}},
		{"#hashtag", wecom.Command{Op: wecom.OpReply, Text: "#hashtag"}},
		{"#12abc", wecom.Command{Op: wecom.OpReply, Text: "#12abc"}},
		{"#12_x", wecom.Command{Op: wecom.OpReply, Text: "#12_x"}},
		{"#1好的，马上处理", wecom.Command{Op: wecom.OpAnswer, Conv: 1, Text: "好的，马上处理"}},
		{"＃1好的", wecom.Command{Op: wecom.OpAnswer, Conv: 1, Text: "好的"}},
		{"#12: on its way", wecom.Command{Op: wecom.OpAnswer, Conv: 12, Text: "on its way"}},
		{"#12：马上", wecom.Command{Op: wecom.OpAnswer, Conv: 12, Text: "马上"}},
		{"#12，马上", wecom.Command{Op: wecom.OpAnswer, Conv: 12, Text: "马上"}},
		{"#12:", wecom.Command{Op: wecom.OpSelect, Conv: 12}},
		{"#1. check the cable", wecom.Command{Op: wecom.OpUsage}},
		{"＃２ 你的订单已发货", wecom.Command{Op: wecom.OpAnswer, Conv: 2, Text: "你的订单已发货"}},
		{"#１２好的", wecom.Command{Op: wecom.OpAnswer, Conv: 12, Text: "好的"}},
		{"/take １２", wecom.Command{Op: wecom.OpTake, Conv: 12}},
		{"#1!", wecom.Command{Op: wecom.OpUsage}},
		{"#0 x", wecom.Command{Op: wecom.OpReply, Text: "#0 x"}},
		{"#99999999999999999999 x", wecom.Command{Op: wecom.OpReply, Text: "#99999999999999999999 x"}},
		{"/on", wecom.Command{Op: wecom.OpOn}},
		{"/ON", wecom.Command{Op: wecom.OpOn}},
		{"／off", wecom.Command{Op: wecom.OpOff}},
		{"/list", wecom.Command{Op: wecom.OpList}},
		{"/help", wecom.Command{Op: wecom.OpHelp}},
		{"/on now", wecom.Command{Op: wecom.OpUsage, Text: "/on takes no arguments"}},
		{"/take 42", wecom.Command{Op: wecom.OpTake, Conv: 42}},
		{"/take #42", wecom.Command{Op: wecom.OpTake, Conv: 42}},
		{"/take", wecom.Command{Op: wecom.OpUsage}},
		{"/take x", wecom.Command{Op: wecom.OpUsage}},
		{"/close", wecom.Command{Op: wecom.OpClose}},
		{"/close 9", wecom.Command{Op: wecom.OpClose, Conv: 9}},
		{"/close 9 10", wecom.Command{Op: wecom.OpUsage}},
		{"/transfer 9 bob", wecom.Command{Op: wecom.OpTransfer, Conv: 9, Who: "bob"}},
		{"/transfer #9 bob@example.com", wecom.Command{Op: wecom.OpTransfer, Conv: 9, Who: "bob@example.com"}},
		{"/transfer 9", wecom.Command{Op: wecom.OpUsage}},
		{"/what", wecom.Command{Op: wecom.OpUnknown, Text: "/what"}},
		{"/", wecom.Command{Op: wecom.OpUnknown, Text: "/"}},
	}
	for _, tt := range tests {
		got := wecom.ParseCommand(tt.in)
		if tt.want.Op == wecom.OpUsage && got.Op == wecom.OpUsage {
			if tt.want.Text != "" && got.Text != tt.want.Text {
				t.Errorf("ParseCommand(%q) usage = %q, want %q", tt.in, got.Text, tt.want.Text)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("ParseCommand(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"hi", "#1 a", "#1", "/take 1", "/close", "/transfer 1 bob", "＃2 x", "／on", "/x y z", "#", "#1\u3000", "\xff#1 a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := wecom.ParseCommand(s)
		switch c.Op {
		case wecom.OpAnswer:
			if c.Conv <= 0 || strings.TrimSpace(c.Text) == "" {
				t.Fatalf("answer without conversation or text: %+v", c)
			}
		case wecom.OpSelect, wecom.OpTake, wecom.OpTransfer:
			if c.Conv <= 0 {
				t.Fatalf("%s without a conversation: %+v", c.Op, c)
			}
		case wecom.OpClose:
			if c.Conv < 0 {
				t.Fatalf("negative conversation: %+v", c)
			}
		case wecom.OpReply:
			if strings.TrimSpace(c.Text) == "" {
				t.Fatalf("empty reply: %+v", c)
			}
		case wecom.OpUnknown:
			if !utf8.ValidString(c.Text) || len(c.Text) > 40 {
				t.Fatalf("unknown command echoed unsafely: %q", c.Text)
			}
		}
		if c.Op == wecom.OpTransfer && c.Who == "" {
			t.Fatalf("transfer to nobody: %+v", c)
		}
	})
}

func FuzzParseCallback(f *testing.F) {
	app := wecomtest.App{CorpID: corpID, AgentID: agentID, Token: token, AESKey: aesKey}
	f.Add(app.Text("alice", "#1 hi", "1"))
	f.Add(app.Image("alice", "m", "https://x", "2"))
	f.Add(app.Event("alice", "enter_agent"))
	f.Add([]byte("<xml><ToUserName>a</ToUserName><AgentID>1</AgentID><Encrypt>abc</Encrypt></xml>"))
	f.Add([]byte("<xml><FromUserName>a\x00b</FromUserName><MsgType>text</MsgType></xml>"))
	f.Add([]byte("<xml><FromUserName>a</FromUserName><MsgType>text</MsgType><Content>\xff\x00</Content><AgentID>x</AgentID></xml>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if env, err := wecom.ParseEnvelope(b); err == nil && env.Encrypt == "" {
			t.Fatal("envelope without Encrypt accepted")
		}
		m, err := wecom.ParseMessage(b)
		if err != nil {
			return
		}
		if m.FromUserName == "" || m.MsgType == "" || !utf8.ValidString(m.Content) || strings.Contains(m.Content, "\x00") {
			t.Fatalf("accepted %+v", m)
		}
	})
}
