package memory_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/bridge/bustest"
	"github.com/kefuhq/kefu/core"
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

// TestSlowSubscriptionHoldsNoOneBack: a subscription that does not read
// blocks neither Publish nor the other subscriptions of the topic, and gets
// everything in order once it reads.
func TestSlowSubscriptionHoldsNoOneBack(t *testing.T) {
	b := memory.New(quiet())
	defer b.Close()
	slow, err := b.FanoutSubscriber().Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := b.FanoutSubscriber().Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000 // more than a drained queue keeps for reuse
	for i := range n {
		if err := b.Publisher().Publish("t", message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []<-chan *message.Message{fast, slow} {
		for i := range n {
			select {
			case m := <-ch:
				if got := string(m.Payload); got != strconv.Itoa(i) {
					t.Fatalf("message %d: got %s", i, got)
				}
				m.Ack()
			case <-time.After(10 * time.Second):
				t.Fatalf("message %d did not arrive", i)
			}
		}
	}
}

// TestSubscriptionsGetTheirOwnCopies: acking or editing the metadata of
// one subscription's message does not touch another's, nor the publisher's.
func TestSubscriptionsGetTheirOwnCopies(t *testing.T) {
	b := memory.New(quiet())
	defer b.Close()
	var chs []<-chan *message.Message
	for range 2 {
		ch, err := b.FanoutSubscriber().Subscribe(context.Background(), "t")
		if err != nil {
			t.Fatal(err)
		}
		chs = append(chs, ch)
	}
	orig := message.NewMessage(watermill.NewUUID(), []byte("x"))
	orig.Metadata.Set("k", "v")
	if err := b.Publisher().Publish("t", orig); err != nil {
		t.Fatal(err)
	}
	m0, m1 := <-chs[0], <-chs[1]
	if m0 == m1 || m0 == orig || m1 == orig {
		t.Fatal("subscriptions share a message")
	}
	m0.Metadata.Set("k", "changed")
	m0.Ack()
	if m1.Metadata.Get("k") != "v" || orig.Metadata.Get("k") != "v" {
		t.Fatal("metadata shared between copies")
	}
	select {
	case <-m1.Acked():
		t.Fatal("one subscription's ack acked another's copy")
	default:
	}
	m1.Ack()
}

// TestPublishWithoutSubscription: a message for a topic nobody subscribes
// to is dropped without an error, and a later subscription does not see it.
func TestPublishWithoutSubscription(t *testing.T) {
	b := memory.New(quiet())
	defer b.Close()
	if err := b.Publisher().Publish("t", message.NewMessage("a", []byte("early"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Publisher().Publish("t"); err != nil {
		t.Fatalf("empty publish: %v", err)
	}
	ch, err := b.FanoutSubscriber().Subscribe(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publisher().Publish("t", message.NewMessage("b", []byte("late"))); err != nil {
		t.Fatal(err)
	}
	m := <-ch
	if string(m.Payload) != "late" {
		t.Fatalf("got %q, want the message published after Subscribe", m.Payload)
	}
	m.Ack()
}

// benchBuses are the implementations the benchmarks compare in one run: the
// memory bus, and the GoChannel-based bus it replaced (gochannel_ref_test.go).
var benchBuses = []struct {
	name string
	new  func() bridge.Bus
}{
	{"memory", func() bridge.Bus { return memory.New(quiet()) }},
	{"gochannel", func() bridge.Bus { return newGoChannelBus(quiet()) }},
}

// BenchmarkPublishReceive measures one message through the bus to each of
// subs acking subscriptions, published back to back (throughput).
func BenchmarkPublishReceive(b *testing.B) {
	for _, impl := range benchBuses {
		for _, subs := range []int{1, 2} {
			b.Run(fmt.Sprintf("bus=%s/subs=%d", impl.name, subs), func(b *testing.B) {
				bus := impl.new()
				defer bus.Close()
				var wg sync.WaitGroup
				for range subs {
					ch, err := bus.FanoutSubscriber().Subscribe(context.Background(), "bench")
					if err != nil {
						b.Fatal(err)
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range b.N {
							(<-ch).Ack()
						}
					}()
				}
				payload := []byte(`{"v":1,"kind":"updates"}`)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := bus.Publisher().Publish("bench", message.NewMessage("id", payload)); err != nil {
						b.Fatal(err)
					}
				}
				wg.Wait()
			})
		}
	}
}

// BenchmarkRoundTrip measures one message's latency: publish, receive, ack,
// then the next.
func BenchmarkRoundTrip(b *testing.B) {
	for _, impl := range benchBuses {
		b.Run("bus="+impl.name, func(b *testing.B) {
			bus := impl.new()
			defer bus.Close()
			ch, err := bus.FanoutSubscriber().Subscribe(context.Background(), "bench")
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"v":1,"kind":"updates"}`)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := bus.Publisher().Publish("bench", message.NewMessage("id", payload)); err != nil {
					b.Fatal(err)
				}
				(<-ch).Ack()
			}
		})
	}
}

// BenchmarkNotifierPath measures kefu's per-message bus hop as a node runs
// it: bridge.Notifier.Publish of one message update (snapshot, publish; no
// JSON on this bus since bridge.EnvelopeCarrier)
// from 4 goroutines at once (ns/op is per message), to one subscription on kefu.updates that
// decodes each envelope (bridge.Decode) and acks it, as the web channel's
// feed does.
func BenchmarkNotifierPath(b *testing.B) {
	const publishers = 4
	u := core.Update{Type: core.UpdateMessage, Message: &core.Message{
		ID: 1, ConversationID: 7, Seq: 3, SenderKind: "contact", SenderID: 9, Visibility: "public",
		Kind: "text", Text: "hello, is my order on its way?", Status: "sent", CreatedAt: time.Unix(1_800_000_000, 0).UTC(),
	}}
	for _, impl := range benchBuses {
		b.Run("bus="+impl.name, func(b *testing.B) {
			bus := impl.new()
			defer bus.Close()
			n := bridge.NewNotifier(bridge.NotifierConfig{Node: "kefu-1", Publisher: bus.Publisher(), Logger: quiet()})
			ch, err := bus.FanoutSubscriber().Subscribe(context.Background(), bridge.UpdatesTopic)
			if err != nil {
				b.Fatal(err)
			}
			total := b.N
			done := make(chan error, 1)
			go func() {
				for range total {
					m := <-ch
					if _, err := bridge.Decode(m); err != nil {
						done <- err
						return
					}
					m.Ack()
				}
				done <- nil
			}()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for p := range publishers {
				share := b.N / publishers
				if p == 0 {
					share += b.N % publishers
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range share {
						n.Publish(ctx, u)
					}
				}()
			}
			wg.Wait()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
