package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/kefuhq/kefu/core"
)

// EnvelopeVersion is the envelope format this build writes and reads. A
// change that older nodes cannot read safely gets a new version; adding an
// optional field does not (unknown fields are ignored on decode).
const EnvelopeVersion = 1

// Kind says what an envelope carries.
type Kind string

const (
	// KindUpdates carries one or more core.Update, in commit order (a
	// group-commit batch may travel as one envelope). Topic: UpdatesTopic.
	KindUpdates Kind = "updates"
	// KindDeliver carries one outbox kick. Topic: DeliverTopic(channel).
	KindDeliver Kind = "deliver"
	// KindPresence carries one node's presence news (PresenceState).
	// Topic: PresenceTopic.
	KindPresence Kind = "presence"
)

// Metadata keys set on every bus message kefu publishes. Backends carry
// metadata next to the payload, so a consumer can route or log by them
// without decoding the payload.
const (
	// MetaKind holds the envelope's Kind.
	MetaKind = "kefu_kind"
	// MetaCorrelationID holds the correlation id. It is watermill's key, so
	// middleware.CorrelationID carries it on to what a handler publishes.
	MetaCorrelationID = middleware.CorrelationIDMetadataKey
)

// ErrMalformedEnvelope is wrapped by every Decode error: the payload is not
// an envelope this node can read. Retrying will not help; such messages
// belong in the poison queue.
var ErrMalformedEnvelope = errors.New("malformed envelope")

// Envelope is the canonical payload of every kefu bus message, encoded as
// JSON:
//
//	{"v":1,"kind":"updates","node":"kefu-1","updates":[{"type":"message",…}]}
//	{"v":1,"kind":"deliver","node":"kefu-1","outbox":{"id":42,"channel":"wa","key":"c:7"}}
//	{"v":1,"kind":"presence","node":"kefu-1","presence":{"op":"delta","epoch":…,"seq":7,"every_ms":5000,"agents":[[3,1]]}}
type Envelope struct {
	V    int    `json:"v"`
	Kind Kind   `json:"kind"`
	Node string `json:"node,omitempty"` // node_id of the publisher (for presence: whose state it is)
	// Updates is the body of KindUpdates.
	Updates []core.Update `json:"updates,omitempty"`
	// Outbox is the body of KindDeliver.
	Outbox *OutboxKick `json:"outbox,omitempty"`
	// Presence is the body of KindPresence.
	Presence *PresenceState `json:"presence,omitempty"`
}

// OutboxKick names a committed outbox entry whose delivery should start.
// The entry itself is read from the store: the kick carries no state that
// the store does not have.
type OutboxKick struct {
	ID      int64  `json:"id"`
	Channel string `json:"channel"`
	Key     string `json:"key"`
}

// UpdatesEnvelope returns an envelope of kind updates.
func UpdatesEnvelope(node string, updates ...core.Update) Envelope {
	return Envelope{V: EnvelopeVersion, Kind: KindUpdates, Node: node, Updates: updates}
}

// DeliverEnvelope returns an envelope of kind deliver for e.
func DeliverEnvelope(node string, e core.OutboxEntry) Envelope {
	return Envelope{V: EnvelopeVersion, Kind: KindDeliver, Node: node,
		Outbox: &OutboxKick{ID: e.ID, Channel: e.Channel, Key: e.Key}}
}

// Validate reports whether env is well formed: a known version and kind,
// and the body that kind requires. Errors wrap ErrMalformedEnvelope.
func (env Envelope) Validate() error {
	switch {
	case env.V == 0:
		return fmt.Errorf("%w: missing version", ErrMalformedEnvelope)
	case env.V != EnvelopeVersion:
		return fmt.Errorf("%w: unsupported version %d (this node reads %d)", ErrMalformedEnvelope, env.V, EnvelopeVersion)
	}
	if env.Presence != nil && env.Kind != KindPresence {
		return fmt.Errorf("%w: kind %q with a presence body", ErrMalformedEnvelope, env.Kind)
	}
	switch env.Kind {
	case KindUpdates:
		if env.Outbox != nil {
			return fmt.Errorf("%w: kind %q with an outbox kick", ErrMalformedEnvelope, env.Kind)
		}
		if len(env.Updates) == 0 {
			return fmt.Errorf("%w: kind %q without updates", ErrMalformedEnvelope, env.Kind)
		}
		for i, u := range env.Updates {
			if err := validUpdate(u); err != nil {
				return fmt.Errorf("%w: updates[%d]: %s", ErrMalformedEnvelope, i, err)
			}
		}
	case KindDeliver:
		if len(env.Updates) != 0 {
			return fmt.Errorf("%w: kind %q with updates", ErrMalformedEnvelope, env.Kind)
		}
		switch {
		case env.Outbox == nil:
			return fmt.Errorf("%w: kind %q without outbox", ErrMalformedEnvelope, env.Kind)
		case env.Outbox.ID <= 0:
			return fmt.Errorf("%w: outbox.id %d is not positive", ErrMalformedEnvelope, env.Outbox.ID)
		case env.Outbox.Channel == "":
			return fmt.Errorf("%w: outbox.channel is empty", ErrMalformedEnvelope)
		}
	case KindPresence:
		switch {
		case len(env.Updates) != 0 || env.Outbox != nil:
			return fmt.Errorf("%w: kind %q with updates or an outbox kick", ErrMalformedEnvelope, env.Kind)
		case env.Presence == nil:
			return fmt.Errorf("%w: kind %q without presence", ErrMalformedEnvelope, env.Kind)
		case env.Node == "":
			return fmt.Errorf("%w: kind %q without node", ErrMalformedEnvelope, env.Kind)
		}
		if err := env.Presence.validate(); err != nil {
			return fmt.Errorf("%w: presence: %s", ErrMalformedEnvelope, err)
		}
	case "":
		return fmt.Errorf("%w: missing kind", ErrMalformedEnvelope)
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrMalformedEnvelope, env.Kind)
	}
	return nil
}

// validUpdate checks that u has a known type and the part that type carries.
func validUpdate(u core.Update) error {
	var ok bool
	switch u.Type {
	case core.UpdateMessage, core.UpdateStatus:
		ok = u.Message != nil
	case core.UpdateConversation:
		ok = u.Conversation != nil
	case core.UpdateReceipt:
		ok = u.Receipt != nil
	case core.UpdateTyping:
		ok = u.Typing != nil
	case "":
		return errors.New("missing type")
	default:
		return fmt.Errorf("unknown type %q", u.Type)
	}
	if !ok {
		return fmt.Errorf("type %q without its %s", u.Type, updatePart(u.Type))
	}
	return nil
}

func updatePart(t core.UpdateType) string {
	switch t {
	case core.UpdateMessage, core.UpdateStatus:
		return "message"
	case core.UpdateConversation:
		return "conversation"
	case core.UpdateReceipt:
		return "receipt"
	default:
		return "typing"
	}
}

// Encode validates env and returns it as a new bus message with a fresh
// UUID and the metadata MetaKind and MetaCorrelationID (correlationID, or a
// new id when empty). A zero env.V is set to EnvelopeVersion.
func Encode(env Envelope, correlationID string) (*message.Message, error) {
	if env.V == 0 {
		env.V = EnvelopeVersion
	}
	payload, err := EncodePayload(env)
	if err != nil {
		return nil, err
	}
	return envelopeMessage(env, correlationID, payload), nil
}

// envelopeMessage is Encode's message around payload (nil for an
// in-process bus, see local.go).
func envelopeMessage(env Envelope, correlationID string, payload []byte) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.Metadata.Set(MetaKind, string(env.Kind))
	if correlationID == "" {
		correlationID = watermill.NewUUID()
	}
	msg.Metadata.Set(MetaCorrelationID, correlationID)
	return msg
}

// EncodePayload validates env and returns its JSON encoding.
func EncodePayload(env Envelope) ([]byte, error) {
	if err := env.Validate(); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode %s envelope: %w", env.Kind, err)
	}
	return b, nil
}

// Decode reads the envelope in msg's payload. Errors wrap
// ErrMalformedEnvelope. When msg carries MetaKind, it must agree with the
// payload.
//
// A message that a Notifier published on an in-process bus carries the
// envelope it was encoded from (local.go); Decode returns that one without
// reading the payload. It may be shared with the topic's other in-process
// subscriptions: treat what Decode returns as read-only.
func Decode(msg *message.Message) (Envelope, error) {
	if env, ok := decoded(msg); ok {
		return env, nil
	}
	env, err := DecodePayload(msg.Payload)
	if err != nil {
		return Envelope{}, err
	}
	if k := msg.Metadata.Get(MetaKind); k != "" && Kind(k) != env.Kind {
		return Envelope{}, fmt.Errorf("%w: metadata says kind %q, payload says %q", ErrMalformedEnvelope, k, env.Kind)
	}
	return env, nil
}

// DecodePayload reads one JSON envelope from b. Unknown fields are ignored
// (forward compatibility within a version); anything after the object, a
// wrong field type, an unknown version or kind, or a missing body is an
// error wrapping ErrMalformedEnvelope.
func DecodePayload(b []byte) (Envelope, error) {
	var env Envelope
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&env); err != nil {
		if errors.Is(err, io.EOF) {
			return Envelope{}, fmt.Errorf("%w: empty payload", ErrMalformedEnvelope)
		}
		return Envelope{}, fmt.Errorf("%w: %w", ErrMalformedEnvelope, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Envelope{}, fmt.Errorf("%w: data after the envelope", ErrMalformedEnvelope)
	}
	if err := env.Validate(); err != nil {
		return Envelope{}, err
	}
	return env, nil
}
