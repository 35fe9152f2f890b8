package bridge_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/kefuhq/kefu/adapters/bus/memory"
	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// printSender is a channel's outbound side: it "sends" by printing.
type printSender struct{ sent chan<- struct{} }

func (s printSender) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	fmt.Printf("to %s on %s: %s\n", out.Conversation.ExternalID, out.Entry.Channel, out.Message.Text)
	s.sent <- struct{}{}
	return bridge.SendResult{ExternalID: "provider-id-1"}, nil
}

// A channel instance's outbound delivery: the core commits a reply with an
// outbox entry and kicks it through the Notifier; the Deliverer sends it
// and marks the message sent.
func ExampleNewDeliverer() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kefu-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "kefu.db"), Logger: quietLogger()})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	bus := memory.New(quietLogger())
	defer bus.Close()
	notifier := bridge.NewNotifier(bridge.NotifierConfig{Node: "kefu-1", Publisher: bus.Publisher()})

	sent := make(chan struct{}, 1)
	d, err := bridge.NewDeliverer(bridge.DelivererConfig{
		Channel: "telegram", Sender: printSender{sent}, Store: store, Notify: notifier, Bus: bus,
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()

	// What core.Service does for an agent's reply.
	in, err := store.Ingest(ctx, core.Inbound{Channel: "telegram", ExternalID: "42",
		Message: core.Message{Kind: core.KindText, Text: "hi"}})
	if err != nil {
		log.Fatal(err)
	}
	res, err := store.Append(ctx, core.Append{ConversationID: in.Conversation.ID, Deliver: true,
		Message: core.Message{SenderKind: core.SenderAgent, SenderID: 1, Visibility: core.Public,
			Kind: core.KindText, Text: "How can I help?", Status: core.MsgPending}})
	if err != nil {
		log.Fatal(err)
	}
	notifier.Deliver(ctx, *res.Outbox)

	<-sent
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	m, err := store.Message(ctx, res.Message.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Status, m.ExternalID)
	// Output:
	// to 42 on telegram: How can I help?
	// sent provider-id-1
}
