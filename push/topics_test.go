package push

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// topicPusher is push/apns.Client for one app: a device registered without
// a topic is pushed with the pusher's topic, and APNs refuses a token of
// another app as DeviceTokenNotForTopic (ErrGone, as apns maps it).
type topicPusher struct {
	topic string
	appOf map[string]string // token → the app it was issued for
	fakePusher
}

func (p *topicPusher) Push(ctx context.Context, n Notification) error {
	topic := n.Device.Topic
	if topic == "" {
		topic = p.topic
	}
	if p.appOf[n.Device.Token] != topic {
		return fmt.Errorf("%w: apns: 400 DeviceTokenNotForTopic", ErrGone)
	}
	return p.fakePusher.Push(ctx, n)
}

// Two pushers (push.agents for the agents' app, push.customers for the
// shop's app), one Fallback each over the same store, as the node builds
// them: each device is pushed once, through its own app's pusher, and
// none is removed for being pushed through the other.
func TestTwoPushersPushEachDeviceThroughItsOwnApp(t *testing.T) {
	h := newHarness(t)
	c := h.conversation() // registers token(1) for the customer, token(2) for Alice, without topics
	appOf := map[string]string{token(1): "com.shop.app", token(2): "com.shop.agents"}
	// Sorted by name: agents, customers. The first takes untopiced devices.
	agents := &topicPusher{topic: "com.shop.agents", appOf: appOf}
	customers := &topicPusher{topic: "com.shop.app", appOf: appOf}
	apps := []string{agents.topic, customers.topic}
	var fbs []*Fallback
	for i, p := range []Pusher{agents, customers} {
		f, err := New(Config{Pusher: p, Store: h.store, Presence: h.presence, FallbackAfter: fallbackAfter,
			Collapse: collapse, Clock: h.clock, Logger: quiet(), Topics: TopicsOf(apps, i)})
		if err != nil {
			t.Fatal(err)
		}
		fbs = append(fbs, f)
	}
	step := func(d time.Duration) {
		ups := h.rec.take()
		for _, f := range fbs {
			for _, u := range ups {
				f.Observe(u)
			}
		}
		h.clock.Advance(d)
		for _, f := range fbs {
			for _, e := range f.takeDue(h.clock.Now()) {
				f.deliver(h.ctx, e, h.pause)
			}
		}
	}

	// Alice's device has no topic: the first pusher's (the agents' app).
	h.customerSays("hello?")
	step(collapse)
	if ds, err := h.store.Devices(h.ctx, core.AgentDevices(h.alice.ID)); err != nil || len(ds) != 1 {
		t.Fatalf("Alice's devices after a customer message: %d, %v; want her registration kept", len(ds), err)
	}
	if len(agents.got()) != 1 || len(customers.got()) != 0 {
		t.Fatalf("Alice's device pushed %d times through the agents' app and %d through the customers', want 1 and 0",
			len(agents.got()), len(customers.got()))
	}

	// The customer's device, registered with its app's topic: only the
	// customers' pusher pushes it.
	if _, err := h.store.RegisterDevice(h.ctx, core.Device{Token: token(1), Owner: core.IdentityDevices("web", "u:42"), Topic: "com.shop.app"}); err != nil {
		t.Fatal(err)
	}
	step(time.Hour)
	h.agentSays(c, "we are here")
	step(time.Hour)
	if len(customers.got()) != 1 || len(agents.got()) != 1 {
		t.Fatalf("the customer's device pushed %d times through the customers' app, %d pushes through the agents' app in all; want 1 and 1",
			len(customers.got()), len(agents.got()))
	}
}
