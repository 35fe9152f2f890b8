package bridge

import "strings"

// kefu's topics. Build topic names with these, never by hand, so that every
// backend and every node agree on them.
const (
	// UpdatesTopic is a fan-out topic: batches of core.Update (envelope kind
	// "updates") that every node passes to the sockets it holds.
	UpdatesTopic = "kefu.updates"
	// PresenceTopic is a fan-out topic: what each node knows of its own
	// sockets and of agents' /on and away flags (envelope kind "presence"),
	// which every node merges into the cluster's presence (presence.go).
	PresenceTopic = "kefu.presence"
	// PoisonTopic is a work topic: messages a handler could not process after
	// its retries, with the reason in the metadata key
	// middleware.ReasonForPoisonedKey. Nothing in kefu consumes it; operators
	// inspect it (the memory bus drops them after they are logged).
	PoisonTopic = "kefu.poison"

	deliverPrefix = "kefu.deliver."
)

// DeliverTopic is the work topic that carries outbox kicks (envelope kind
// "deliver") for one channel instance. Instance names are validated by the
// config (lower-case letters, digits, '-' and '_'), so the result is a valid
// topic name on every backend (a NATS subject token, a Redis stream key).
func DeliverTopic(instance string) string { return deliverPrefix + instance }

// DeliverInstance returns the channel instance a DeliverTopic name belongs
// to, and false for any other topic.
func DeliverInstance(topic string) (string, bool) {
	inst, ok := strings.CutPrefix(topic, deliverPrefix)
	if !ok || inst == "" {
		return "", false
	}
	return inst, true
}
