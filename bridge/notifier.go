package bridge

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/core"
)

type correlationKey struct{}

// WithCorrelationID returns ctx carrying a correlation id (a request id, a
// provider's message id) that the Notifier puts on what it publishes, so
// logs on every node can follow one request.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the correlation id in ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}

// NotifierConfig configures a Notifier.
type NotifierConfig struct {
	// Node is this node's id (node_id), written into every envelope.
	Node string
	// Publisher publishes the envelopes; normally Bus.Publisher(). Required.
	Publisher message.Publisher
	// Logger logs publish failures. nil: slog.Default().
	Logger *slog.Logger
	// Metrics counts publish failures. nil: not counted.
	Metrics *Metrics
}

// Notifier implements core.Notifier on the bus: Publish sends updates to
// UpdatesTopic, Deliver sends an outbox kick to DeliverTopic(channel).
//
// A failed publish is logged and counted, never returned: what it announced
// is already committed, clients resume by sequence number, and the
// Deliverer's sweep finds an outbox entry whose kick was lost. Safe for
// concurrent use; it does not block longer than the publisher's Publish.
type Notifier struct {
	node    string
	pub     message.Publisher
	log     *slog.Logger
	metrics *Metrics
	// inProcess: pub is an EnvelopeCarrier, so the envelope attached to a
	// message is all its subscribers read; the JSON payload is left out.
	inProcess bool
}

// NewNotifier returns a Notifier.
func NewNotifier(cfg NotifierConfig) *Notifier {
	if cfg.Publisher == nil {
		panic("bridge.NewNotifier: nil Publisher")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Notifier{node: cfg.Node, pub: cfg.Publisher, log: cfg.Logger, metrics: cfg.Metrics}
	if c, ok := cfg.Publisher.(EnvelopeCarrier); ok && c.CarriesEnvelopes() {
		n.inProcess = true
	}
	return n
}

// Publish sends updates, in order, as one envelope on UpdatesTopic. The
// caller may change what they point to afterwards: an in-process bus gets a
// copy of them (see local.go), any other the JSON encoded before Publish
// returns.
func (n *Notifier) Publish(ctx context.Context, updates ...core.Update) {
	if len(updates) == 0 {
		return
	}
	if n.inProcess {
		updates = snapshotUpdates(updates)
	}
	n.publish(ctx, UpdatesTopic, UpdatesEnvelope(n.node, updates...))
}

// Deliver sends a kick for e on its channel's work topic.
func (n *Notifier) Deliver(ctx context.Context, e core.OutboxEntry) {
	n.publish(ctx, DeliverTopic(e.Channel), DeliverEnvelope(n.node, e))
}

func (n *Notifier) publish(ctx context.Context, topic string, env Envelope) {
	if env.V == 0 {
		env.V = EnvelopeVersion
	}
	var msg *message.Message
	var err error
	if n.inProcess {
		if err = env.Validate(); err == nil {
			msg = envelopeMessage(env, CorrelationID(ctx), nil)
		} else {
			err = fmt.Errorf("encode: %w", err)
		}
	} else {
		msg, err = Encode(env, CorrelationID(ctx))
	}
	if err == nil {
		if n.inProcess {
			attachDecoded(msg, env)
		}
		err = n.pub.Publish(topic, msg)
	}
	if err != nil {
		n.metrics.publishError()
		n.log.LogAttrs(ctx, slog.LevelWarn, "bus: publish failed; the store still has it",
			slog.String("topic", topic), slog.String("kind", string(env.Kind)), slog.Any("err", err))
	}
}

var _ core.Notifier = (*Notifier)(nil)
