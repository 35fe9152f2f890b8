package bridge_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/bridge"
)

// runRouter starts r and stops it when the test ends.
func runRouter(t *testing.T, r *message.Router) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	select {
	case <-r.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router did not start")
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("router Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("router Run: %v", err)
		}
	})
}

func newTestRouter(t *testing.T, bus *memory.Bus, reg *prometheus.Registry) *message.Router {
	t.Helper()
	metrics, err := bridge.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := bridge.NewRouter(bridge.RouterConfig{
		Publisher: bus.Publisher(), Logger: quietLogger(), Registry: reg, Metrics: metrics,
		RetryInitialInterval: time.Millisecond, RetryMaxInterval: 2 * time.Millisecond,
		HandlerTimeout: time.Second, CloseTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRouterPoisonsAfterRetries(t *testing.T) {
	tests := []struct {
		name    string
		handler func() error
		reason  string
	}{
		{"error", func() error { return errors.New("store unavailable") }, "store unavailable"},
		{"panic", func() error { panic("nil map write") }, "nil map write"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bus := memory.New(quietLogger())
			defer bus.Close()
			reg := prometheus.NewRegistry()
			poison, err := bus.WorkSubscriber().Subscribe(t.Context(), bridge.PoisonTopic)
			if err != nil {
				t.Fatal(err)
			}
			r := newTestRouter(t, bus, reg)
			var calls atomic.Int32
			var cancelled atomic.Int32
			r.AddConsumerHandler("ingest", "kefu.test.in", bus.WorkSubscriber(), func(m *message.Message) error {
				calls.Add(1)
				if m.Context().Err() != nil {
					cancelled.Add(1) // a retry started with a dead context
				}
				return tc.handler()
			})
			runRouter(t, r)

			msg := message.NewMessage("m-1", []byte("payload"))
			middleware.SetCorrelationID("corr-9", msg)
			if err := bus.Publisher().Publish("kefu.test.in", msg); err != nil {
				t.Fatal(err)
			}
			got := receiveOne(t, poison)
			if got.UUID != "m-1" || string(got.Payload) != "payload" {
				t.Errorf("poisoned %s %q, want the original message", got.UUID, got.Payload)
			}
			if reason := got.Metadata.Get(middleware.ReasonForPoisonedKey); !strings.Contains(reason, tc.reason) {
				t.Errorf("reason %q, want it to mention %q", reason, tc.reason)
			}
			if h := got.Metadata.Get(middleware.PoisonedHandlerKey); h != "ingest" {
				t.Errorf("poisoned handler %q, want ingest", h)
			}
			if c := got.Metadata.Get(bridge.MetaCorrelationID); c != "corr-9" {
				t.Errorf("correlation id %q, want corr-9", c)
			}
			if n := calls.Load(); n != 4 {
				t.Errorf("handler called %d times, want 4 (1 + 3 retries)", n)
			}
			if n := cancelled.Load(); n != 0 {
				t.Errorf("%d attempts started with a cancelled context", n)
			}
			if got := metricValue(t, reg, "kefu_bus_poisoned_total", map[string]string{"handler": "ingest"}); got != 1 {
				t.Errorf("kefu_bus_poisoned_total = %v, want 1", got)
			}
			if got := metricValue(t, reg, "kefu_bus_handler_execution_time_seconds", nil); got == 0 {
				t.Error("no watermill router metrics on the registry")
			}
		})
	}
}

func TestRouterRetrySucceedsAndKeepsCorrelationID(t *testing.T) {
	bus := memory.New(quietLogger())
	defer bus.Close()
	out, err := bus.FanoutSubscriber().Subscribe(t.Context(), "kefu.test.out")
	if err != nil {
		t.Fatal(err)
	}
	poison, err := bus.WorkSubscriber().Subscribe(t.Context(), bridge.PoisonTopic)
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRouter(t, bus, nil)
	var calls atomic.Int32
	r.AddHandler("relay", "kefu.test.in", bus.WorkSubscriber(), "kefu.test.out", bus.Publisher(),
		func(m *message.Message) ([]*message.Message, error) {
			if calls.Add(1) < 3 {
				return nil, errors.New("flaky")
			}
			return []*message.Message{message.NewMessage("produced", []byte("ok"))}, nil
		})
	runRouter(t, r)

	msg := message.NewMessage("m-1", nil)
	middleware.SetCorrelationID("corr-1", msg)
	if err := bus.Publisher().Publish("kefu.test.in", msg); err != nil {
		t.Fatal(err)
	}
	got := receiveOne(t, out)
	if got.UUID != "produced" || got.Metadata.Get(bridge.MetaCorrelationID) != "corr-1" {
		t.Errorf("produced %s with correlation id %q, want corr-1", got.UUID, got.Metadata.Get(bridge.MetaCorrelationID))
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times, want 3", n)
	}
	select {
	case m := <-poison:
		t.Errorf("message poisoned although a retry succeeded: %s", m.UUID)
	default:
	}
}

func TestNewRouterNeedsPublisher(t *testing.T) {
	if _, err := bridge.NewRouter(bridge.RouterConfig{}); err == nil {
		t.Error("NewRouter without a publisher succeeded")
	}
}
