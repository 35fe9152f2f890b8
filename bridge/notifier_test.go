package bridge_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

func receiveOne(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-ch:
		m.Ack()
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

func TestNotifierRoundTrip(t *testing.T) {
	bus := memory.New(quietLogger())
	defer bus.Close()
	updates, err := bus.FanoutSubscriber().Subscribe(t.Context(), bridge.UpdatesTopic)
	if err != nil {
		t.Fatal(err)
	}
	kicks, err := bus.WorkSubscriber().Subscribe(t.Context(), bridge.DeliverTopic("wa"))
	if err != nil {
		t.Fatal(err)
	}
	n := bridge.NewNotifier(bridge.NotifierConfig{Node: "kefu-1", Publisher: bus.Publisher(), Logger: quietLogger()})
	ctx := bridge.WithCorrelationID(context.Background(), "req-7")

	sent := sampleUpdates()
	n.Publish(ctx, sent...)
	n.Publish(ctx) // nothing to say: nothing published
	n.Deliver(ctx, core.OutboxEntry{ID: 5, Channel: "wa", Key: "c:12", MessageID: 99})

	m := receiveOne(t, updates)
	env, err := bridge.Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if env.Kind != bridge.KindUpdates || env.Node != "kefu-1" || !reflect.DeepEqual(env.Updates, sent) {
		t.Errorf("updates envelope %+v", env)
	}
	if got := m.Metadata.Get(bridge.MetaCorrelationID); got != "req-7" {
		t.Errorf("correlation id %q, want req-7", got)
	}

	m = receiveOne(t, kicks)
	env, err = bridge.Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := (bridge.OutboxKick{ID: 5, Channel: "wa", Key: "c:12"}); env.Kind != bridge.KindDeliver || *env.Outbox != want {
		t.Errorf("deliver envelope %+v, want kick %+v", env, want)
	}
	select {
	case m := <-updates:
		t.Errorf("unexpected second updates message %s", m.Payload)
	default:
	}
}

type failingPublisher struct{}

func (failingPublisher) Publish(string, ...*message.Message) error {
	return errors.New("redis: connection refused")
}
func (failingPublisher) Close() error { return nil }

func TestNotifierPublishFailureIsLoggedAndCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics, err := bridge.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	n := bridge.NewNotifier(bridge.NotifierConfig{Publisher: failingPublisher{}, Metrics: metrics,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	n.Publish(context.Background(), sampleUpdates()...)
	n.Deliver(context.Background(), core.OutboxEntry{ID: 1, Channel: "wa"})
	if got := metricValue(t, reg, "kefu_bus_publish_errors_total", nil); got != 2 {
		t.Errorf("publish errors = %v, want 2", got)
	}
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("log does not carry the error: %s", logs.String())
	}
}
