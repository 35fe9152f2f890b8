package core_test

import (
	"testing"

	"github.com/kefuhq/kefu/core"
)

func TestEndsUnread(t *testing.T) {
	msg := func(sender core.SenderKind, vis core.Visibility, kind core.ContentKind, status core.MessageStatus) core.Message {
		return core.Message{SenderKind: sender, Visibility: vis, Kind: kind, Status: status, Text: "x"}
	}
	tests := []struct {
		name       string
		m          core.Message
		forContact bool
		want       bool
	}{
		{"an agent's reply, for agents", msg(core.SenderAgent, core.Public, core.KindText, core.MsgSent), false, true},
		{"an automatic reply, for agents", msg(core.SenderBot, core.Public, core.KindText, core.MsgSent), false, false},
		{"a note, for agents", msg(core.SenderAgent, core.Internal, core.KindText, core.MsgSent), false, false},
		{"an event, for agents", msg(core.SenderSystem, core.Internal, core.KindEvent, core.MsgSent), false, false},
		{"a customer message agents read", msg(core.SenderContact, core.Public, core.KindText, core.MsgRead), false, true},
		{"a customer message not read", msg(core.SenderContact, core.Public, core.KindText, core.MsgDelivered), false, false},
		{"the customer's own, for the customer", msg(core.SenderContact, core.Public, core.KindText, core.MsgSent), true, true},
		{"an automatic reply they read, for the customer", msg(core.SenderBot, core.Public, core.KindText, core.MsgRead), true, true},
		{"an agent's reply not read, for the customer", msg(core.SenderAgent, core.Public, core.KindText, core.MsgDelivered), true, false},
	}
	for _, tt := range tests {
		if got := core.EndsUnread(tt.m, tt.forContact); got != tt.want {
			t.Errorf("%s: EndsUnread = %v, want %v", tt.name, got, tt.want)
		}
	}
}
