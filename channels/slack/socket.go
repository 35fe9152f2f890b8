package slack

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"
)

// runSocketMode receives events over Socket Mode (app_token set) until ctx
// is done: the same handling as the Events API endpoint, each envelope
// acknowledged once its event is handled. An envelope whose handling fails
// (the store is down) is not acknowledged, so Slack sends it again.
//
// Socket Mode is work that runs once in a cluster, under the lease
// "run.NAME" (see Run and Exclusive). Slack hands each event to one of an
// app's open connections, so several nodes connected at once would still
// handle each event once; one connection keeps it simple. The conversation
// follower runs under a lease of its own ("follow.NAME").
func (c *Channel) runSocketMode(ctx context.Context) {
	client := slack.New(c.cfg.BotToken, slack.OptionAPIURL(c.cfg.APIBase), slack.OptionAppLevelToken(c.cfg.AppToken))
	for attempt := 0; ctx.Err() == nil; attempt++ {
		// slack-go's socketmode logs only in debug mode, and its debug
		// output includes message contents: keep it quiet.
		sm := socketmode.New(client, socketmode.OptionLog(log.New(io.Discard, "", 0)))
		runCtx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- sm.RunContext(runCtx) }()
		connected := c.socketEvents(runCtx, sm, errc)
		stop()
		err := <-errc
		if ctx.Err() != nil {
			return
		}
		if connected {
			attempt = 0
		}
		d := backoff(attempt)
		c.log.Warn("slack: Socket Mode connection ended; reconnecting", "in", d, "err", err)
		if !sleep(ctx, d) {
			return
		}
	}
}

// socketEvents handles one Socket Mode client's events until it stops. It
// reports whether the client connected.
func (c *Channel) socketEvents(ctx context.Context, sm *socketmode.Client, errc chan error) (connected bool) {
	for {
		select {
		case <-ctx.Done():
			return connected
		case err := <-errc:
			errc <- err // for the caller
			return connected
		case evt := <-sm.Events:
			switch evt.Type {
			case socketmode.EventTypeConnected:
				connected = true
				c.noteHealth(nil)
				c.log.Info("slack: Socket Mode connected")
			case socketmode.EventTypeInvalidAuth:
				c.noteHealth(slack.SlackErrorResponse{Err: "invalid_auth"})
			case socketmode.EventTypeEventsAPI:
				c.socketEvent(ctx, sm, evt)
			case socketmode.EventTypeErrorBadMessage:
				// slack-go could not parse the envelope (an inner event type
				// it does not know): acknowledge it, kefu has no use for it.
				if bad, ok := evt.Data.(*socketmode.ErrorBadMessage); ok {
					var env struct {
						EnvelopeID string `json:"envelope_id"`
					}
					if json.Unmarshal(bad.Message, &env) == nil && env.EnvelopeID != "" {
						_ = sm.AckCtx(ctx, env.EnvelopeID, nil)
					}
				}
			}
		}
	}
}

// socketEvent handles one events_api envelope and acknowledges it.
func (c *Channel) socketEvent(ctx context.Context, sm *socketmode.Client, evt socketmode.Event) {
	if evt.Request == nil {
		return
	}
	data, ok := evt.Data.(slackevents.EventsAPIEvent)
	if ok {
		hctx, cancel := context.WithTimeout(ctx, handleBudget)
		err := c.handleEvent(hctx, fromAPIEvent(data))
		cancel()
		if err != nil {
			c.log.Warn("slack: event not handled; Slack will send it again", "envelope", evt.Request.EnvelopeID, "err", err)
			return
		}
	}
	if err := sm.AckCtx(ctx, evt.Request.EnvelopeID, nil); err != nil && !errors.Is(err, context.Canceled) {
		c.log.Warn("slack: acknowledging an envelope failed", "envelope", evt.Request.EnvelopeID, "err", err)
	}
}
