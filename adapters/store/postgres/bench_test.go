package postgres_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/kefuhq/kefu/adapters/store/postgres"
	"github.com/kefuhq/kefu/core"
)

// BenchmarkAppend: 32 goroutines per CPU append agent messages (with client
// dedup keys) to 64 conversations, without group commit, with the default
// batch and with a large one, on one node and spread over three nodes
// (three stores on one schema, which share the write lock).
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		nodes, batch int
	}{
		{1, 1}, {1, postgres.DefaultMaxBatch}, {1, 256}, {3, postgres.DefaultMaxBatch},
	} {
		b.Run(fmt.Sprintf("nodes=%d/MaxBatch=%d", tc.nodes, tc.batch), func(b *testing.B) {
			ctx := context.Background()
			dsn := freshSchema(b)
			var stores []*postgres.Store
			for range tc.nodes {
				stores = append(stores, open(b, dsn, postgres.Options{MaxBatch: tc.batch}))
			}
			const convs = 64
			ids := make([]int64, convs)
			for i := range ids {
				in, err := stores[0].Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(i),
					Message: core.Message{Kind: core.KindText, Text: "hi"}})
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = in.Conversation.ID
			}
			var next atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := next.Add(1)
					_, err := stores[n%int64(len(stores))].Append(ctx, core.Append{ConversationID: ids[n%convs],
						Message: core.Message{SenderKind: core.SenderAgent, SenderID: 1, Kind: core.KindText,
							Text: "a reply of some length", DedupKey: "c:bench:" + strconv.FormatInt(n, 10)}})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// BenchmarkIngest: customers' messages with provider dedup keys, from 4096
// identities, through group commit.
func BenchmarkIngest(b *testing.B) {
	ctx := context.Background()
	s := open(b, freshSchema(b), postgres.Options{})
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			_, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: strconv.FormatInt(n%4096, 10),
				Name: "Customer", ReopenWithin: 0, Message: core.Message{Kind: core.KindText,
					Text: "hello, I have a question", DedupKey: "p:wa:" + strconv.FormatInt(n, 10)}})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ingests/s")
}
