package sqlite_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "kefu")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	ctx := context.Background()
	s, err := sqlite.Open(ctx, sqlite.Options{
		Path:   filepath.Join(dir, "data", "kefu.db"),
		Sync:   "normal",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = s.Close() }()

	// A customer writes on Telegram; the message is durable when Ingest returns.
	in, err := s.Ingest(ctx, core.Inbound{
		Channel: "telegram", ExternalID: "4242", Name: "Zhang San",
		Message:      core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:telegram:1001"},
		ReopenWithin: 168 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(in.Conversation.Number(), in.Conversation.Status, in.Message.Seq)

	// Telegram repeats the update: stored once.
	again, err := s.Ingest(ctx, core.Inbound{Channel: "telegram", ExternalID: "4242",
		Message: core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:telegram:1001"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.Duplicate, again.Message.ID == in.Message.ID)
	// Output:
	// #1 pending 1
	// true true
}
