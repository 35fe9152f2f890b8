package nats_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/adapters/bus/nats"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/internal/testenv"
)

// privateServer runs a nats-server with JetStream of this test's own, so
// that it can be restarted without its state; restart kills it, removes
// its store and starts it again on the same port.
type privateServer struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startPrivateServer(t *testing.T) *privateServer {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if testenv.Required() {
			t.Fatalf("nats-server is not installed: %v", err)
		}
		t.Skip("nats-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &privateServer{t: t, port: port, dir: t.TempDir()}
	s.start(bin)
	t.Cleanup(s.stop)
	return s
}

func (s *privateServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *privateServer) start(bin string) {
	s.t.Helper()
	s.cmd = exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(s.port), "-js", "-sd", s.dir)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nats-server did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *privateServer) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func (s *privateServer) restartWithoutState() {
	s.t.Helper()
	s.stop()
	if err := os.RemoveAll(s.dir); err != nil {
		s.t.Fatal(err)
	}
	s.start(s.cmd.Path)
}

// startIdleBus runs a private server and a Bus on it whose idle
// subscriptions check their consumer only every 10 minutes, subscribed to
// the presence topic (fan-out) until the test ends.
func startIdleBus(t *testing.T) (*privateServer, *nats.Bus, context.Context, <-chan *message.Message) {
	t.Helper()
	srv := startPrivateServer(t)
	o := nats.Options{URL: srv.url(), NodeID: "n1", Logger: quiet(), Stream: "KEFU_RECONNECT", AckWait: testAckWait}
	b, err := nats.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	b.SetCheckEvery(10 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fan, err := b.FanoutSubscriber().Subscribe(ctx, bridge.PresenceTopic)
	if err != nil {
		t.Fatal(err)
	}
	return srv, b, ctx, fan
}

// A NATS server that restarts without its state has lost every consumer.
// The subscriptions make theirs again as soon as the connection is back,
// not at their next idle check (here 10 minutes away): a node's presence
// heartbeats on the fan-out topic must not stop for that long.
func TestServerRestartedWithoutStateIsResubscribedOnReconnect(t *testing.T) {
	srv, b, ctx, fan := startIdleBus(t)
	work, err := b.WorkSubscriber().Subscribe(ctx, "kefu.deliver.web")
	if err != nil {
		t.Fatal(err)
	}

	srv.restartWithoutState()
	var gotFan, gotWork bool
	deadline := time.Now().Add(90 * time.Second) // far below the idle check
	for !gotFan || !gotWork {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: fan-out received %v, work received %v", gotFan, gotWork)
		}
		for _, topic := range []string{bridge.PresenceTopic, "kefu.deliver.web"} {
			_ = b.Publisher().Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))) // fails until the stream is back
		}
		wait := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-fan:
				m.Ack()
				gotFan = true
			case m := <-work:
				m.Ack()
				gotWork = true
			case <-wait:
				break drain
			}
		}
	}
}

// A reconnection that happens while the subscription hands a message on
// (its consumer has not taken it yet) is seen all the same once the
// message is taken: the subscription checks its consumer then, not at its
// next idle check.
func TestReconnectDuringHandOnIsSeen(t *testing.T) {
	srv, b, _, fan := startIdleBus(t)
	if err := b.Publisher().Publish(bridge.PresenceTopic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the subscription holds it, waiting for the consumer to take it
	srv.restartWithoutState()
	time.Sleep(5 * time.Second) // reconnected meanwhile (nats.go reconnects every 2 s)
	m := <-fan
	m.Ack()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no message 30 s after the restart: the reconnection was missed (next check in 10 minutes)")
		}
		_ = b.Publisher().Publish(bridge.PresenceTopic, message.NewMessage(watermill.NewUUID(), []byte("y")))
		select {
		case m := <-fan:
			m.Ack()
			return
		case <-time.After(300 * time.Millisecond):
		}
	}
}
