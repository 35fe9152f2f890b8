package slack_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/channels/slack"
	"github.com/kefuhq/kefu/channels/slack/slacktest"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/internal/wait"
)

const (
	botToken      = "xoxb-test-token"
	appToken      = "xapp-test-token"
	signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"
	supportChan   = "C0SUPPORT1"
	aliceSlack    = "U0ALICE"
	strangerSlack = "U0STRANGER"
	publicURL     = "https://support.example.com"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness is a Slack channel named "slack" over a real store and core
// service, with a fake Slack, and a customer channel "crm" that needs no
// provider (replies stay in the store).
type harness struct {
	t     *testing.T
	fake  *slacktest.Server
	store core.Store
	svc   *core.Service
	ch    *slack.Channel
	cfg   slack.Config
	alice core.Agent
	bob   core.Agent // not mapped to Slack
	srv   *httptest.Server
}

type options struct {
	socket bool          // Socket Mode (app_token) instead of the Events API
	window time.Duration // reply window of the "crm" channel
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	h := &harness{t: t, fake: slacktest.New(botToken, appToken)}
	t.Cleanup(h.fake.Close)
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "kefu.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h.store = st
	h.svc = core.NewService(core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour},
		core.Deps{Store: st, Presence: core.NewMemoryPresence(), Notifier: nopNotifier{}, Logger: quiet,
			Window: func(ch string) time.Duration {
				if ch == "crm" {
					return o.window
				}
				return 0
			}})
	if h.alice, err = st.CreateAgent(ctx, core.Agent{Email: "alice@example.com", Name: "Alice", Role: core.RoleAgent, Active: true, SlackUser: aliceSlack}); err != nil {
		t.Fatal(err)
	}
	if h.bob, err = st.CreateAgent(ctx, core.Agent{Email: "bob@example.com", Name: "Bob", Role: core.RoleAgent, Active: true}); err != nil {
		t.Fatal(err)
	}
	h.cfg = slack.Config{BotToken: botToken, SigningSecret: signingSecret, Channel: supportChan, APIBase: h.fake.APIURL()}
	if o.socket {
		h.cfg.AppToken, h.cfg.SigningSecret = appToken, ""
	}
	if err := h.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.ch = h.newChannel()
	mux := http.NewServeMux()
	h.ch.Mount(mux)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	h.run(h.ch.Run)
	return h
}

// newChannel builds another instance over the same store (a restarted
// process, or another node).
func (h *harness) newChannel() *slack.Channel {
	h.t.Helper()
	ch, err := slack.New("slack", h.cfg, channels.Deps{Service: h.svc, Logger: quiet, PublicURL: publicURL})
	if err != nil {
		h.t.Fatal(err)
	}
	return ch
}

// run runs f until the test ends and waits for it to return.
func (h *harness) run(f func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f(ctx); err != nil {
			h.t.Errorf("run: %v", err)
		}
	})
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

// follow runs a follower for the channel from the start of the log.
func (h *harness) follow() {
	h.t.Helper()
	if err := h.store.PutSetting(context.Background(), "follow.slack", "0 2000-01-01T00:00:00Z"); err != nil {
		h.t.Fatal(err)
	}
	f, err := bridge.NewFollower(bridge.FollowerConfig{Name: "slack", Handler: h.ch, Store: h.store, Poll: 20 * time.Millisecond, Logger: quiet})
	if err != nil {
		h.t.Fatal(err)
	}
	h.run(f.Run)
}

// customer ingests a message from customer ext on the crm channel.
func (h *harness) customer(ext, name, text string, at time.Time) core.Ingested {
	h.t.Helper()
	res, err := h.svc.Ingest(context.Background(), core.Inbound{
		Channel: "crm", ExternalID: ext, Name: name,
		Message: core.Message{Kind: core.KindText, Text: text, DedupKey: core.ProviderKey("crm", fmt.Sprint(time.Now().UnixNano())), CreatedAt: at},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// mapThread makes (supportChan, ts) the thread of conversation convID, as
// a posted parent would.
func (h *harness) mapThread(convID int64, ts string) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.store.PutSetting(ctx, fmt.Sprintf("slack.slack.conv.%s.%s", supportChan, ts), fmt.Sprint(convID)); err != nil {
		h.t.Fatal(err)
	}
	if err := h.store.PutSetting(ctx, fmt.Sprintf("slack.slack.thread.%d", convID), supportChan+" "+ts+" 0 0"); err != nil {
		h.t.Fatal(err)
	}
}

// waitMapped waits until conversation convID's thread is stored.
func (h *harness) waitMapped(convID int64) {
	h.t.Helper()
	waitFor(h.t, "the thread mapping", func() bool {
		v, err := h.store.Setting(context.Background(), fmt.Sprintf("slack.slack.thread.%d", convID))
		return err == nil && !strings.HasPrefix(v, "pending")
	})
}

// post signs body and posts it to the Events API endpoint; it returns the
// status and body.
func (h *harness) post(body []byte, at time.Time, retry int) (int, string) {
	h.t.Helper()
	resp, err := slacktest.PostEvent(http.DefaultClient, h.srv.URL+slack.EventsPath("slack"), signingSecret, body, at, retry)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) messages(convID int64) []core.Message {
	h.t.Helper()
	ms, err := h.store.Messages(context.Background(), core.MessageQuery{ConversationID: convID})
	if err != nil {
		h.t.Fatal(err)
	}
	return ms
}

func (h *harness) conversation(id int64) core.Conversation {
	h.t.Helper()
	c, err := h.store.Conversation(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

var waitFor = wait.For

type nopNotifier struct{}

func (nopNotifier) Publish(context.Context, ...core.Update)   {}
func (nopNotifier) Deliver(context.Context, core.OutboxEntry) {}
