package memory_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/bridge/bustest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestBus(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bridge.Bus { return memory.New(quiet()) })
}

func TestWorkTopicTakesOneSubscription(t *testing.T) {
	b := memory.New(quiet())
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := b.WorkSubscriber().Subscribe(ctx, "kefu.deliver.x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WorkSubscriber().Subscribe(context.Background(), "kefu.deliver.x"); err == nil {
		t.Fatal("second work subscription in one process accepted")
	}
	// Fan-out subscriptions of the same name are a different matter.
	if _, err := b.FanoutSubscriber().Subscribe(ctx, "kefu.deliver.x"); err != nil {
		t.Fatalf("fan-out subscription: %v", err)
	}
	cancel()
	for range ch {
	}
	// Once the first subscription has ended, the topic takes a new one.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, err := b.WorkSubscriber().Subscribe(ctx2, "kefu.deliver.x"); err != nil {
		t.Fatalf("subscription after the first ended: %v", err)
	}
}

// TestNackKeepsOrder: a nacked message comes back before anything newer.
func TestNackKeepsOrder(t *testing.T) {
	b := memory.New(quiet())
	defer b.Close()
	ch, err := b.FanoutSubscriber().Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := b.Publisher().Publish("t", message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	nacked := false
	for len(got) < 3 {
		select {
		case m := <-ch:
			if string(m.Payload) == "1" && !nacked {
				nacked = true
				m.Nack()
				continue
			}
			got = append(got, string(m.Payload))
			m.Ack()
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v", got)
		}
	}
	if want := "[0 1 2]"; slicesString(got) != want {
		t.Errorf("order after Nack = %v, want %s", got, want)
	}
}

func slicesString(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}

// BenchmarkPublishReceive measures one message through the bus to one
// acking subscriber.
func BenchmarkPublishReceive(b *testing.B) {
	bus := memory.New(quiet())
	defer bus.Close()
	ch, err := bus.FanoutSubscriber().Subscribe(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range b.N {
			(<-ch).Ack()
		}
	}()
	payload := []byte(`{"v":1,"kind":"updates"}`)
	b.ResetTimer()
	for range b.N {
		if err := bus.Publisher().Publish("bench", message.NewMessage("id", payload)); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// BenchmarkRoundTrip measures one message's latency: publish, receive, ack,
// then the next.
func BenchmarkRoundTrip(b *testing.B) {
	bus := memory.New(quiet())
	defer bus.Close()
	ch, err := bus.FanoutSubscriber().Subscribe(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"v":1,"kind":"updates"}`)
	b.ResetTimer()
	for range b.N {
		if err := bus.Publisher().Publish("bench", message.NewMessage("id", payload)); err != nil {
			b.Fatal(err)
		}
		(<-ch).Ack()
	}
}
