package telegram_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-telegram/bot/models"

	"github.com/kefuhq/kefu/channels/telegram"
	"github.com/kefuhq/kefu/channels/telegram/telegramtest"
	"github.com/kefuhq/kefu/core"
)

// run starts ch's loop (polling) and returns a stop that cancels it and
// waits for Run to return, failing the test if it returned an error.
func (h *harness) run(ch *telegram.Channel) (stop func(), done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		if err := ch.Run(ctx); err != nil {
			h.t.Errorf("Run = %v", err)
		}
	}()
	stop = func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			h.t.Fatal("Run did not return after its context ended")
		}
	}
	h.t.Cleanup(stop)
	return stop, finished
}

// texts lists the texts of the customer messages of chat, in sequence order.
func (h *harness) texts(chat string) []string {
	cs, _ := h.store.Conversations(context.Background(), core.ConversationFilter{Channel: "tg", ExternalID: chat})
	var out []string
	for _, c := range cs {
		for _, m := range h.messages(c.ID) {
			if m.SenderKind == core.SenderContact {
				out = append(out, m.Text)
			}
		}
	}
	return out
}

func (h *harness) waitTexts(chat string, want []string) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("chat %s to have %q", chat, want), func() bool { return len(h.texts(chat)) >= len(want) })
	if got := h.texts(chat); !slices.Equal(got, want) {
		h.t.Fatalf("chat %s: messages %q, want %q", chat, got, want)
	}
}

func TestPolling(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling, greeting: "Welcome!"})
	// A webhook left from an earlier setup would make getUpdates fail.
	h.api.SetWebhookURL("https://old.example.com/webhooks/tg", "old")
	h.run(h.ch)
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "/start")))
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "where is my order?")))
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(43, "hello")))
	h.waitTexts("42", []string{"/start", "where is my order?"})
	h.waitTexts("43", []string{"hello"})
	if w := h.api.Webhook(); w.URL != "" {
		t.Fatalf("webhook still set: %+v", w)
	}
	if dels := h.api.Calls("deleteWebhook"); len(dels) != 1 || dels[0].Fields["drop_pending_updates"] == "true" {
		t.Fatalf("deleteWebhook calls: %+v", dels)
	}
	// The greeting went out through the outbox.
	if sent := h.api.WaitSent(1, 10*time.Second); len(sent) != 1 || sent[0].Fields["text"] != "Welcome!" {
		t.Fatalf("sent %+v", sent)
	}
	// Every update is confirmed once stored.
	waitFor(t, "updates confirmed", func() bool { return len(h.api.Pending()) == 0 })
	polls := h.api.Calls("getUpdates")
	first := polls[0]
	if first.Fields["offset"] != "" || first.Fields["allowed_updates"] != `["message"]` || first.Fields["timeout"] != "1" {
		t.Errorf("first getUpdates: %+v", first.Fields)
	}
	for _, p := range polls[1:] {
		if p.Fields["offset"] == "" {
			t.Errorf("a later getUpdates without an offset: %+v", p.Fields)
		}
	}
}

// TestPollingCrash stops the loop abruptly after the fake handed out a
// batch (after the k-th update was stored, before the offset moved past
// it), restarts it as a new process would, and checks that every update is
// stored exactly once, in order.
func TestPollingCrash(t *testing.T) {
	for _, crashAfter := range []int{0, 2, 4} {
		t.Run(fmt.Sprintf("after update %d of 5", crashAfter+1), func(t *testing.T) {
			h := newHarness(t, options{mode: telegram.ModePolling})
			var ids []int64
			var want []string
			for i := range 5 {
				want = append(want, fmt.Sprintf("m%d", i+1))
				ids = append(ids, h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, want[i]))))
			}
			first := h.newChannel()
			ctx, crash := context.WithCancel(context.Background())
			telegram.SetHandledHook(first, func(id int64) {
				if id == ids[crashAfter] {
					crash()
				}
			})
			if err := first.Run(ctx); err != nil {
				t.Fatal(err)
			}
			h.waitTexts("42", want[:crashAfter+1])
			if got := h.api.Pending(); !slices.Equal(got, ids) {
				t.Fatalf("pending after the crash = %v, want all of %v (none confirmed)", got, ids)
			}

			h.run(h.newChannel()) // the restarted process
			waitFor(t, "updates confirmed", func() bool { return len(h.api.Pending()) == 0 })
			h.waitTexts("42", want)
			if polls := h.api.Calls("getUpdates"); !slices.Equal(polls[1].Updates, ids) {
				t.Fatalf("after the restart getUpdates handed out %v, want %v again", polls[1].Updates, ids)
			}
		})
	}
}

// TestPollingCrashDuringDownload stops the loop while it fetches a
// customer's photo, in the middle of a batch.
func TestPollingCrashDuringDownload(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	photo := h.api.AddFile("photos/p.png", pngImage(t))
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "before")))
	m := telegramtest.Private(42, "Zhang", "San", "")
	m.Photo = []models.PhotoSize{{FileID: photo, Width: 40, Height: 30}}
	h.api.AddUpdate(telegramtest.Update(m))
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "after")))
	h.api.FailNext("getFile", telegramtest.Failure{Delay: time.Minute}) // hangs until the client gives up

	stop, _ := h.run(h.newChannel())
	h.api.WaitArrived("getFile", 1, 10*time.Second)
	stop() // the crash
	h.waitTexts("42", []string{"before"})

	h.run(h.newChannel())
	waitFor(t, "updates confirmed", func() bool { return len(h.api.Pending()) == 0 })
	h.waitTexts("42", []string{"before", "", "after"})
	ms := h.messages(h.conversation("42").ID)
	if ms[1].Kind != core.KindImage {
		t.Fatalf("second message: %+v", ms[1])
	}
}

func TestPollingRetryAfter(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	h.api.FailNext("getUpdates", telegramtest.Failure{Code: http.StatusTooManyRequests, Description: "Too Many Requests: retry after 1", RetryAfter: 1})
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "hi")))
	h.run(h.ch)
	h.waitTexts("42", []string{"hi"})
	polls := h.api.Calls("getUpdates")
	if polls[0].ErrorCode != http.StatusTooManyRequests {
		t.Fatalf("first poll: %+v", polls[0])
	}
	if gap := polls[1].At.Sub(polls[0].At); gap < time.Second {
		t.Fatalf("polled again %s after a 429 with retry_after 1", gap)
	}
}

// TestPollingUpdateNotStoredIsRetried: an update that cannot be stored
// yet (Telegram's file service fails) stops the batch; the loop asks
// again from it, and later updates wait their turn.
func TestPollingUpdateNotStoredIsRetried(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	photo := h.api.AddFile("photos/p.png", pngImage(t))
	m := telegramtest.Private(42, "Zhang", "San", "")
	m.Photo = []models.PhotoSize{{FileID: photo, Width: 40, Height: 30}}
	m.Caption = "photo"
	h.api.AddUpdate(telegramtest.Update(m))
	h.api.AddUpdate(telegramtest.Update(telegramtest.Text(42, "text")))
	h.api.FailNext("getFile", telegramtest.Failure{Code: http.StatusInternalServerError}, telegramtest.Failure{Code: http.StatusBadGateway})
	h.run(h.ch)
	waitFor(t, "updates confirmed", func() bool { return len(h.api.Pending()) == 0 })
	h.waitTexts("42", []string{"photo", "text"})
	if n := len(h.api.Calls("getFile")); n != 3 {
		t.Fatalf("%d getFile calls, want 3", n)
	}
}

func TestPollingStopsCleanly(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	h.cfg.PollTimeout = time.Minute
	stop, done := h.run(h.newChannel())
	h.api.WaitArrived("getUpdates", 1, 10*time.Second) // a long poll is waiting
	stop()
	select {
	case <-done:
	default:
		t.Fatal("Run still running")
	}
}

func TestPollingUnreadableUpdateSkipped(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	h.api.AddRawUpdate(500, []byte(`{"update_id":500,"message":{"chat":{"id":42,"type":"private"},"forward_origin":{"date":1}}}`))
	h.api.AddUpdate(models.Update{ID: 501, Message: telegramtest.Text(42, "readable")})
	h.run(h.ch)
	waitFor(t, "updates confirmed", func() bool { return len(h.api.Pending()) == 0 })
	h.waitTexts("42", []string{"readable"})
	if !strings.Contains(fmt.Sprint(h.api.Calls("getUpdates")[0].Updates), "500") {
		t.Fatal("the unreadable update was not handed out")
	}
}

// After a week without updates Telegram starts update_id afresh, at random,
// possibly below the offset the poller holds: once a poll comes back empty
// the poller asks from the oldest unconfirmed update again, and the new,
// lower ids arrive.
func TestPollingAfterUpdateIDsRestart(t *testing.T) {
	h := newHarness(t, options{mode: telegram.ModePolling})
	h.run(h.ch)
	u := telegramtest.Update(telegramtest.Text(42, "before the quiet week"))
	u.ID = 900000
	h.api.AddUpdate(u)
	h.waitTexts("42", []string{"before the quiet week"})
	handled := time.Now()
	waitFor(t, "a poll that comes back empty", func() bool {
		for _, c := range h.api.Calls("getUpdates") {
			if c.Answered && c.ErrorCode == 0 && len(c.Updates) == 0 && c.At.After(handled) {
				return true
			}
		}
		return false
	})
	u2 := telegramtest.Update(telegramtest.Text(42, "hello again"))
	u2.ID = 1234
	h.api.AddUpdate(u2)
	h.waitTexts("42", []string{"before the quiet week", "hello again"})
}
