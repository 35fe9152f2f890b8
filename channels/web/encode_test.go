package web

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// TestEncodeMatchesJSON checks the hand-written message encoder against
// encoding/json, whose output is the documented format.
func TestEncodeMatchesJSON(t *testing.T) {
	names := func(id int64) string { return map[int64]string{3: "Alice <admin>"}[id] }
	at := time.Date(2026, 11, 22, 6, 30, 1, 123456000, time.UTC)
	conv := &core.Conversation{ID: 9, ContactID: 2, Channel: "web", ExternalID: "u:ü\"42", Status: core.StatusOpen, AssigneeID: 3,
		LastSeq: 5, LastInboundAt: at, CreatedAt: at.Add(-time.Hour), UpdatedAt: at}
	msgs := []core.Message{
		{ID: 1, ConversationID: 9, Seq: 1, SenderKind: core.SenderContact, SenderID: 2, Visibility: core.Public, Kind: core.KindText,
			Text: "plain", Status: core.MsgSent, CreatedAt: at},
		{ID: 2, ConversationID: 9, Seq: 2, SenderKind: core.SenderAgent, SenderID: 3, Visibility: core.Internal, Kind: core.KindText,
			Text: "esc \" \\ / \n\r\t\b\f \x00\x1f <b>&amp; \u2028\u2029 \xff\xfe 你好 😀", Status: core.MsgFailed, FailReason: "HTTP 400",
			ExternalID: "wamid.1", ResendOf: 1, CreatedAt: at.In(time.FixedZone("CST", 8*3600))},
		{ID: 3, ConversationID: 9, Seq: 3, SenderKind: core.SenderSystem, Visibility: core.Public, Kind: core.KindEvent,
			Event: &core.Event{Type: core.EventTransferred, AgentID: 3, FromID: 4, ByID: 3}, Status: core.MsgSent},
		{ID: 4, ConversationID: 9, Seq: 4, SenderKind: core.SenderAgent, SenderID: 3, Visibility: core.Public, Kind: core.KindImage,
			Media: &core.Media{Key: "k/1", Name: "a.png", Type: "image/png", Size: 1234, Preview: "k/1p"}, Status: core.MsgRead, CreatedAt: at},
		{ID: 5, ConversationID: 9, Seq: 5, SenderKind: core.SenderBot, Visibility: core.Public, Kind: core.KindFile,
			Media: &core.Media{Key: "k/2", Type: "application/pdf"}, Status: core.MsgPending},
	}
	for _, m := range msgs {
		want, _ := json.Marshal(messageOut{Type: frameMessage, Message: &m, Conversation: conv})
		if got := agentMessageFrame(&m, conv).data; !bytes.Equal(got, want) {
			t.Errorf("agent frame:\n got %s\nwant %s", got, want)
		}
		want, _ = json.Marshal(messageOut{Type: frameMessage, Message: viewMessage(&m, names)})
		if got := visitorMessageFrame(&m, names).data; !bytes.Equal(got, want) {
			t.Errorf("visitor frame:\n got %s\nwant %s", got, want)
		}
	}
	want, _ := json.Marshal(messageOut{Type: frameMessage, Message: &msgs[0]})
	if got := agentMessageFrame(&msgs[0], nil).data; !bytes.Equal(got, want) {
		t.Errorf("without conversation:\n got %s\nwant %s", got, want)
	}
}

func FuzzEncodeString(f *testing.F) {
	f.Add("hello", "")
	f.Add("\x00<\u2028\xff", "é")
	f.Fuzz(func(t *testing.T, text, reason string) {
		m := core.Message{ID: 1, Text: text, FailReason: reason, Status: core.MsgSent}
		want, _ := json.Marshal(messageOut{Type: frameMessage, Message: &m})
		if got := agentMessageFrame(&m, nil).data; !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}
