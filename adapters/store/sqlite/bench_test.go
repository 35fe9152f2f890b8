package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/core"
)

// BenchmarkAppend: 32 goroutines per CPU append agent messages to 64
// conversations, with and without group commit, at sync normal.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 256} {
		b.Run(fmt.Sprintf("MaxBatch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			s := open(b, filepath.Join(b.TempDir(), "kefu.db"), sqlite.Options{Sync: "normal", MaxBatch: batch})
			const convs = 64
			ids := make([]int64, convs)
			for i := range ids {
				in, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(i),
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
					_, err := s.Append(ctx, core.Append{ConversationID: ids[n%convs], Message: core.Message{
						SenderKind: core.SenderAgent, SenderID: 1, Kind: core.KindText, Text: "a reply of some length",
						DedupKey: "c:bench:" + strconv.FormatInt(n, 10)}})
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
// identities, through group commit; WAL checkpoints by the background
// checkpointer (the default) and, for reference in the same run, by
// SQLite's automatic checkpoint inside the commit.
func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		every time.Duration
	}{
		{"checkpoint=commit", -1},
		{"checkpoint=background", 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			s := open(b, filepath.Join(b.TempDir(), "kefu.db"), sqlite.Options{Sync: "normal", CheckpointInterval: tc.every})
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
		})
	}
}

// BenchmarkIngestNew: every message from a customer not seen before, so each
// ingest creates a contact, an identity and a conversation (the start of a
// busy day, or of a bench run), through group commit.
func BenchmarkIngestNew(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "kefu.db"), sqlite.Options{Sync: "normal"})
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := strconv.FormatInt(next.Add(1), 10)
			_, err := s.Ingest(ctx, core.Inbound{Channel: "wa", ExternalID: n, Name: "Customer", Message: core.Message{
				Kind: core.KindText, Text: "hello, I have a question", DedupKey: "p:wa:" + n}})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ingests/s")
}

// BenchmarkConversationsByIdentity: a visitor's newest conversation, as the
// web channel reads it at every session start and WebSocket hello (core's
// Conversations with a channel and an external id), for identities with
// and without one.
func BenchmarkConversationsByIdentity(b *testing.B) {
	ctx := context.Background()
	s := open(b, filepath.Join(b.TempDir(), "kefu.db"), sqlite.Options{Sync: "normal"})
	const ids = 1024
	for i := range ids {
		if _, err := s.Ingest(ctx, core.Inbound{Channel: "web", ExternalID: "v" + strconv.Itoa(i),
			Message: core.Message{Kind: core.KindText, Text: "hi"}}); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1) % (2 * ids) // half of them have no conversation
			cs, err := s.Conversations(ctx, core.ConversationFilter{Channel: "web", ExternalID: "v" + strconv.FormatInt(n, 10), Limit: 1})
			want := 0
			if n < ids {
				want = 1
			}
			if err != nil || len(cs) != want {
				b.Errorf("%d: %d conversations, %v", n, len(cs), err)
				return
			}
		}
	})
}
