package postgres_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
)

// Two nodes open the same database; either accepts any message, and a
// provider's retry arriving at the other node is still stored once.
func ExampleOpen() {
	ctx := context.Background()
	dsn := os.Getenv("KEFU_POSTGRES") // e.g. postgres://kefu:secret@db:5432/kefu?search_path=kefu
	node1, err := postgres.Open(ctx, postgres.Options{DSN: dsn})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = node1.Close() }()
	node2, err := postgres.Open(ctx, postgres.Options{DSN: dsn}) // migrations run once
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = node2.Close() }()

	in := core.Inbound{Channel: "telegram", ExternalID: "4242", Name: "Zhang San",
		Message:      core.Message{Kind: core.KindText, Text: "hello", DedupKey: "p:telegram:1001"},
		ReopenWithin: 168 * time.Hour}
	first, err := node1.Ingest(ctx, in) // durable when it returns
	if err != nil {
		log.Fatal(err)
	}
	again, err := node2.Ingest(ctx, in) // Telegram repeats the update
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(again.Duplicate, again.Message.ID == first.Message.ID)

	// An agent's stream: every message after the cursor, in commit order.
	ms, err := node2.Feed(ctx, 0, 100)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(ms))
}
