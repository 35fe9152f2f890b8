package bridge_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// TestInProcessDecodeSkipsJSON: on the memory bus, what a Notifier
// published reaches every subscription as the envelope itself, with no JSON
// payload: equal to what the payload would say, shared by the
// subscriptions, and untouched by the publisher's later changes.
func TestInProcessDecodeSkipsJSON(t *testing.T) {
	bus := memory.New(quietLogger())
	defer bus.Close()
	var chs []<-chan *message.Message
	for range 2 {
		ch, err := bus.FanoutSubscriber().Subscribe(context.Background(), bridge.UpdatesTopic)
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	n := bridge.NewNotifier(bridge.NotifierConfig{Node: "kefu-1", Publisher: bus.Publisher(), Logger: quietLogger()})
	m := &core.Message{ID: 5, ConversationID: 7, Seq: 2, Kind: core.KindText, Text: "hello", Status: core.MsgSent,
		CreatedAt: time.Unix(1_800_000_000, 0).UTC()}
	n.Publish(context.Background(), core.Update{Type: core.UpdateMessage, Message: m})
	m.Text = "changed after Publish"

	var envs []bridge.Envelope
	for _, ch := range chs {
		msg := <-ch
		env, err := bridge.Decode(msg)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Payload) != 0 {
			t.Errorf("the in-process bus got a JSON payload of %d bytes", len(msg.Payload))
		}
		payload, err := bridge.EncodePayload(env)
		if err != nil {
			t.Fatal(err)
		}
		fromJSON, err := bridge.DecodePayload(payload)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(env, fromJSON) {
			t.Errorf("in-process envelope %+v differs from the payload's %+v", env, fromJSON)
		}
		if got := env.Updates[0].Message.Text; got != "hello" {
			t.Errorf("text = %q, want the value at Publish", got)
		}
		envs = append(envs, env)
		msg.Ack()
	}
	if envs[0].Updates[0].Message != envs[1].Updates[0].Message {
		t.Error("the subscriptions decoded the JSON instead of sharing the attached envelope")
	}
}

// recordingPublisher keeps what is published, as a networked bus would
// send it.
type recordingPublisher struct{ got []*message.Message }

func (p *recordingPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.got = append(p.got, msgs...)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// TestNotifierEncodesForOtherBuses: through a publisher that is not an
// in-process EnvelopeCarrier, a Notifier's messages carry the JSON payload
// that Decode reads on another node.
func TestNotifierEncodesForOtherBuses(t *testing.T) {
	pub := &recordingPublisher{}
	n := bridge.NewNotifier(bridge.NotifierConfig{Node: "kefu-1", Publisher: pub, Logger: quietLogger()})
	n.Deliver(context.Background(), core.OutboxEntry{ID: 4, Channel: "wa", Key: "c:1"})
	if len(pub.got) != 1 {
		t.Fatalf("published %d messages", len(pub.got))
	}
	wire := message.NewMessage(pub.got[0].UUID, pub.got[0].Payload)
	wire.Metadata = pub.got[0].Metadata
	env, err := bridge.Decode(wire)
	if err != nil || env.Outbox == nil || env.Outbox.ID != 4 || env.Node != "kefu-1" {
		t.Fatalf("Decode = %+v, %v", env, err)
	}
}

// TestDecodeWithoutAttachedEnvelope: a message that crossed a networked bus
// (payload and metadata only) decodes from its payload, malformed ones
// still fail, and CarryDecoded leaves such a message alone.
func TestDecodeWithoutAttachedEnvelope(t *testing.T) {
	msg, err := bridge.Encode(bridge.DeliverEnvelope("kefu-1", core.OutboxEntry{ID: 4, Channel: "wa", Key: "c:1"}), "")
	if err != nil {
		t.Fatal(err)
	}
	wire := message.NewMessage(msg.UUID, msg.Payload)
	wire.Metadata = msg.Metadata
	bridge.CarryDecoded(message.NewMessage("x", nil), wire)
	env, err := bridge.Decode(wire)
	if err != nil || env.Outbox == nil || env.Outbox.ID != 4 {
		t.Fatalf("Decode = %+v, %v", env, err)
	}
	bad := message.NewMessage("y", []byte(`{"v":1,"kind":"updates"}`))
	bridge.CarryDecoded(message.NewMessage("x", nil), bad)
	if _, err := bridge.Decode(bad); err == nil {
		t.Fatal("malformed payload decoded")
	}
}
