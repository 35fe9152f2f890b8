package wechat_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kefuhq/kefu/channels/wechat"
	"github.com/kefuhq/kefu/channels/wechat/wechattest"
)

func seedMessages(f *testing.F) {
	a := wechattest.Account{AppID: appID, Token: token, AESKey: aesKey, OriginalID: "gh_1"}
	f.Add(a.Text("o-1", "hello", 1))
	f.Add(a.Image("o-1", "m-1", "https://mmbiz.qpic.cn/x", 2))
	f.Add(a.Voice("o-1", "m-2", "amr", "识别", 3))
	f.Add(a.Video("o-1", "m-3", "t-3", 4))
	f.Add(a.Location("o-1", 1.5, -2.25, 15, "here", 5))
	f.Add(a.Link("o-1", "t", "d", "https://x", 6))
	f.Add(a.Event("o-1", "subscribe", "qrscene_1", 7))
	f.Add(a.Event("o-1", "CLICK", "K", 8))
	f.Add([]byte("<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>\x00\xff</Content></xml>"))
	f.Add([]byte("<xml><FromUserName>o</FromUserName><MsgType>event</MsgType><Event>unsubscribe</Event><CreateTime>-1</CreateTime></xml>"))
	f.Add([]byte("<xml><Encrypt>abc</Encrypt></xml>"))
	f.Add([]byte("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><xml>&a;</xml>"))
}

func FuzzParseMessage(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		ok, kind, text, mediaID, id, err := wechat.ToInbound(b)
		if err != nil {
			if ok {
				t.Fatal("ok with an error")
			}
			return
		}
		if !ok {
			return
		}
		if id == "" || id == "msg:0" {
			t.Fatalf("no dedup id: %q", id)
		}
		if !utf8.ValidString(text) || strings.Contains(text, "\x00") {
			t.Fatalf("text not cleaned: %q", text)
		}
		if kind == "text" && strings.TrimSpace(text) == "" {
			t.Fatalf("empty text accepted")
		}
		if kind != "text" && mediaID == "" && kind != "image" {
			t.Fatalf("%s without media id", kind)
		}
	})
}

func FuzzParseEnvelope(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := wechat.ParseEnvelope(b)
		if err == nil && env.Encrypt == "" {
			t.Fatal("envelope without Encrypt accepted")
		}
	})
}
