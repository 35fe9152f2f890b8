package bridge_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

func sampleUpdates() []core.Update {
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	conv := core.Conversation{ID: 12, ContactID: 3, Channel: "wa", ExternalID: "8613800000000",
		Status: core.StatusOpen, AssigneeID: 2, LastSeq: 5, LastInboundAt: at, CreatedAt: at, UpdatedAt: at}
	msg := core.Message{ID: 99, ConversationID: 12, Seq: 5, SenderKind: core.SenderContact, SenderID: 3,
		Visibility: core.Public, Kind: core.KindImage, Text: "看这个",
		Media:  &core.Media{Key: "m/1", Name: "a.png", Type: "image/png", Size: 1234},
		Status: core.MsgDelivered, CreatedAt: at}
	return []core.Update{
		{Type: core.UpdateMessage, Conversation: &conv, Message: &msg},
		{Type: core.UpdateReceipt, Receipt: &core.Receipt{ConversationID: 12, UpToSeq: 5, Status: core.MsgRead}},
		{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 12, SenderKind: core.SenderAgent, SenderID: 2, On: true}},
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		env  bridge.Envelope
	}{
		{"updates", bridge.UpdatesEnvelope("kefu-1", sampleUpdates()...)},
		{"deliver", bridge.DeliverEnvelope("kefu-2", core.OutboxEntry{ID: 42, Channel: "wa", Key: "c:12", MessageID: 99})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := bridge.Encode(tc.env, "corr-1")
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Metadata.Get(bridge.MetaKind); got != string(tc.env.Kind) {
				t.Errorf("metadata kind %q, want %q", got, tc.env.Kind)
			}
			if got := msg.Metadata.Get(bridge.MetaCorrelationID); got != "corr-1" {
				t.Errorf("metadata correlation id %q, want corr-1", got)
			}
			got, err := bridge.Decode(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.env) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.env)
			}
		})
	}
}

func TestEncodeSetsCorrelationID(t *testing.T) {
	msg, err := bridge.Encode(bridge.UpdatesEnvelope("n", sampleUpdates()[0]), "")
	if err != nil {
		t.Fatal(err)
	}
	if msg.Metadata.Get(bridge.MetaCorrelationID) == "" || msg.UUID == "" {
		t.Errorf("no correlation id or UUID: %v %q", msg.Metadata, msg.UUID)
	}
}

func TestEnvelopeWireFormat(t *testing.T) {
	b, err := bridge.EncodePayload(bridge.DeliverEnvelope("kefu-1", core.OutboxEntry{ID: 42, Channel: "wa", Key: "c:12"}))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"kind":"deliver","node":"kefu-1","outbox":{"id":42,"channel":"wa","key":"c:12"}}`
	if string(b) != want {
		t.Errorf("payload\n got %s\nwant %s", b, want)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    string
	}{
		{"empty", ``, "empty payload"},
		{"not json", `hello`, "invalid character"},
		{"array", `[1,2]`, "cannot unmarshal array"},
		{"null", `null`, "missing version"},
		{"no version", `{"kind":"updates","updates":[{"type":"typing","typing":{"conversation_id":1}}]}`, "missing version"},
		{"future version", `{"v":2,"kind":"updates"}`, "unsupported version 2"},
		{"version as string", `{"v":"1","kind":"updates"}`, "cannot unmarshal string"},
		{"no kind", `{"v":1}`, "missing kind"},
		{"unknown kind", `{"v":1,"kind":"gossip"}`, `unknown kind "gossip"`},
		{"presence without body", `{"v":1,"kind":"presence","node":"a"}`, "without presence"},
		{"presence without node", `{"v":1,"kind":"presence","presence":{"op":"leave","epoch":1,"seq":1,"every_ms":5000}}`, "without node"},
		{"presence bad body", `{"v":1,"kind":"presence","node":"a","presence":{"op":"leave","epoch":1,"seq":0,"every_ms":5000}}`, "presence: seq is 0"},
		{"presence with updates", `{"v":1,"kind":"presence","node":"a","presence":{"op":"leave","epoch":1,"seq":1,"every_ms":5000},"updates":[{"type":"typing","typing":{}}]}`, "with updates"},
		{"presence body on another kind", `{"v":1,"kind":"deliver","outbox":{"id":3,"channel":"wa"},"presence":{"op":"leave"}}`, "with a presence body"},
		{"updates empty", `{"v":1,"kind":"updates","updates":[]}`, "without updates"},
		{"updates with outbox", `{"v":1,"kind":"updates","updates":[{"type":"typing","typing":{}}],"outbox":{"id":1,"channel":"wa"}}`, "with an outbox kick"},
		{"update without type", `{"v":1,"kind":"updates","updates":[{}]}`, "updates[0]: missing type"},
		{"update unknown type", `{"v":1,"kind":"updates","updates":[{"type":"typing","typing":{}},{"type":"x"}]}`, `updates[1]: unknown type "x"`},
		{"message update without message", `{"v":1,"kind":"updates","updates":[{"type":"message","conversation":{"id":1}}]}`, `type "message" without its message`},
		{"deliver without outbox", `{"v":1,"kind":"deliver"}`, "without outbox"},
		{"deliver zero id", `{"v":1,"kind":"deliver","outbox":{"id":0,"channel":"wa"}}`, "outbox.id 0"},
		{"deliver no channel", `{"v":1,"kind":"deliver","outbox":{"id":3}}`, "outbox.channel is empty"},
		{"deliver with updates", `{"v":1,"kind":"deliver","outbox":{"id":3,"channel":"wa"},"updates":[{"type":"typing","typing":{}}]}`, "with updates"},
		{"trailing data", `{"v":1,"kind":"deliver","outbox":{"id":3,"channel":"wa"}} {}`, "data after the envelope"},
		{"truncated", `{"v":1,"kind":"deliver","outbox":{"id":3,`, "unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bridge.DecodePayload([]byte(tc.payload))
			if !errors.Is(err, bridge.ErrMalformedEnvelope) {
				t.Fatalf("err = %v, want ErrMalformedEnvelope", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	env, err := bridge.DecodePayload([]byte(`{"v":1,"kind":"deliver","trace":"x","outbox":{"id":3,"channel":"wa","key":"k","shard":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if env.Outbox.ID != 3 || env.Outbox.Key != "k" {
		t.Errorf("decoded %+v", env.Outbox)
	}
}

func TestDecodeChecksMetadataKind(t *testing.T) {
	msg, err := bridge.Encode(bridge.DeliverEnvelope("n", core.OutboxEntry{ID: 1, Channel: "wa"}), "c")
	if err != nil {
		t.Fatal(err)
	}
	msg.Metadata.Set(bridge.MetaKind, string(bridge.KindUpdates))
	if _, err := bridge.Decode(msg); !errors.Is(err, bridge.ErrMalformedEnvelope) {
		t.Errorf("err = %v, want ErrMalformedEnvelope for a kind mismatch", err)
	}
	// Without the metadata (another producer), the payload decides.
	if _, err := bridge.Decode(message.NewMessage("x", msg.Payload)); err != nil {
		t.Errorf("Decode without metadata: %v", err)
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	if _, err := bridge.Encode(bridge.Envelope{Kind: bridge.KindUpdates}, ""); !errors.Is(err, bridge.ErrMalformedEnvelope) {
		t.Errorf("Encode of an empty updates envelope: %v", err)
	}
}

// FuzzDecodePayload: Decode never panics, and whatever it accepts encodes
// to a canonical form that decodes to the same thing.
func FuzzDecodePayload(f *testing.F) {
	for _, env := range []bridge.Envelope{
		bridge.UpdatesEnvelope("kefu-1", sampleUpdates()...),
		bridge.DeliverEnvelope("kefu-1", core.OutboxEntry{ID: 42, Channel: "wa", Key: "c:12"}),
	} {
		b, err := bridge.EncodePayload(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"v":1,"kind":"updates","updates":[{"type":"status","message":{"id":1,"status":"failed"}}]}`))
	f.Add([]byte(`{"v":1,"kind":"deliver","outbox":{"id":1,"channel":"wa"}}`))
	f.Add([]byte(`{"v":1,"kind":"updates","updates":[{"type":"message","message":{"created_at":"2026-01-01T00:00:00+08:00"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := bridge.DecodePayload(data)
		if err != nil {
			if !errors.Is(err, bridge.ErrMalformedEnvelope) {
				t.Fatalf("error does not wrap ErrMalformedEnvelope: %v", err)
			}
			return
		}
		b1, err := bridge.EncodePayload(env)
		if err != nil {
			t.Fatalf("accepted envelope does not encode: %v", err)
		}
		env2, err := bridge.DecodePayload(b1)
		if err != nil {
			t.Fatalf("canonical form does not decode: %v\n%s", err, b1)
		}
		b2, err := bridge.EncodePayload(env2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("canonical form is not stable:\n%s\n%s", b1, b2)
		}
	})
}

func TestTopics(t *testing.T) {
	if got := bridge.DeliverTopic("shop-bot"); got != "kefu.deliver.shop-bot" {
		t.Errorf("DeliverTopic = %q", got)
	}
	if inst, ok := bridge.DeliverInstance("kefu.deliver.shop-bot"); !ok || inst != "shop-bot" {
		t.Errorf("DeliverInstance = %q, %v", inst, ok)
	}
	for _, topic := range []string{bridge.UpdatesTopic, bridge.PoisonTopic, "kefu.deliver.", "other"} {
		if _, ok := bridge.DeliverInstance(topic); ok {
			t.Errorf("DeliverInstance(%q) ok", topic)
		}
	}
}
