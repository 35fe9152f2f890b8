package bridge

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/core"
)

// An in-process bus hands subscribers the publisher's message (a copy of
// it), so the JSON round trip on that hop only turns an Envelope into bytes
// and back. So when its publisher is such a bus's (an EnvelopeCarrier), the
// Notifier encodes no JSON and attaches the envelope to the message it
// publishes instead, as a snapshot that shares nothing with the values its
// caller passed in; the Bus passes it on to its copies (CarryDecoded), and
// Decode returns it. Through any other publisher (a networked Bus sends
// only the payload and metadata) the Notifier encodes the JSON and
// attaches nothing, and Decode reads the JSON as always. Either way Decode
// returns an equal Envelope.
//
// The attached envelope is shared by every in-process subscription of the
// topic: subscribers treat what Decode returns as read-only (kefu's do:
// they copy what they keep or only read it).

// EnvelopeCarrier is implemented by the Publisher of an in-process Bus
// whose subscribers receive copies of the published message with the
// envelope a Notifier attached (CarryDecoded), and which sends nothing
// anywhere else. A Notifier publishing through one that answers true
// leaves the JSON payload out: encoding it was about 5 % of the server's
// CPU in a closed-loop run, for bytes nobody read. Decode still reads a
// payload when a message has no attached envelope.
type EnvelopeCarrier interface {
	CarriesEnvelopes() bool
}

// decodedKey keys the attached envelope in a message's context.
type decodedKey struct{}

// attachDecoded attaches env to msg. The context carries nothing else:
// contexts do not cross a bus.
func attachDecoded(msg *message.Message, env Envelope) {
	msg.SetContext(context.WithValue(context.Background(), decodedKey{}, env))
}

// decoded returns the envelope attached to msg, if any.
func decoded(msg *message.Message) (Envelope, bool) {
	env, ok := msg.Context().Value(decodedKey{}).(Envelope)
	return env, ok
}

// CarryDecoded passes the envelope a Notifier attached to from on to to, a
// copy of from made by an in-process Bus for one of its subscriptions, so
// that Decode(to) need not read the payload. It carries nothing else of
// from's context. A message with no attached envelope is left as it is.
func CarryDecoded(from, to *message.Message) {
	if env, ok := decoded(from); ok {
		attachDecoded(to, env)
	}
}

// snapshotUpdates returns a copy of us that shares no memory with it: the
// slice, and every value an update points to.
func snapshotUpdates(us []core.Update) []core.Update {
	out := make([]core.Update, len(us))
	for i, u := range us {
		if u.Conversation != nil {
			c := *u.Conversation
			u.Conversation = &c
		}
		if u.Message != nil {
			m := *u.Message
			if m.Media != nil {
				md := *m.Media
				m.Media = &md
			}
			if m.Event != nil {
				ev := *m.Event
				m.Event = &ev
			}
			u.Message = &m
		}
		if u.Receipt != nil {
			r := *u.Receipt
			u.Receipt = &r
		}
		if u.Typing != nil {
			t := *u.Typing
			u.Typing = &t
		}
		out[i] = u
	}
	return out
}
