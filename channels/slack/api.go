package slack

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/kefuhq/kefu/bridge"
)

// api wraps the slack-go client with one rate-limit gate per instance:
// after Slack answers 429, no call of the instance goes out before the
// Retry-After it gave has passed. (All of an instance's posts go to one
// channel, and Slack limits posting per channel.)
type api struct {
	c      *slack.Client
	now    func() time.Time
	health func(error) // told of every answer, for Check

	mu        sync.Mutex
	notBefore time.Time
}

func newAPI(c *slack.Client, now func() time.Time, health func(error)) *api {
	return &api{c: c, now: now, health: health}
}

// defaultRetryAfter is the wait after a 429 that gives no usable Retry-After.
const defaultRetryAfter = 30 * time.Second

// wait blocks until the gate is open or ctx is done.
func (a *api) wait(ctx context.Context) error {
	for {
		a.mu.Lock()
		d := a.notBefore.Sub(a.now())
		a.mu.Unlock()
		if d <= 0 {
			return nil
		}
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// done looks at a call's outcome: a rate limit closes the gate.
func (a *api) done(err error) error {
	if d, ok := rateLimited(err); ok {
		a.mu.Lock()
		if t := a.now().Add(d); t.After(a.notBefore) {
			a.notBefore = t
		}
		a.mu.Unlock()
	}
	if a.health != nil {
		a.health(err)
	}
	return err
}

// rateLimited reports whether err is a 429 and how long Slack asked to wait.
func rateLimited(err error) (time.Duration, bool) {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		if rl.RetryAfter <= 0 {
			return time.Second, true
		}
		return rl.RetryAfter, true
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) && sc.Code == http.StatusTooManyRequests {
		return defaultRetryAfter, true // a 429 without Retry-After
	}
	return 0, false
}

// post posts a message and returns its ts and, for a threaded post,
// whether Slack put it in the thread (false when the parent was deleted).
func (a *api) post(ctx context.Context, channel string, opts ...slack.MsgOption) (ts string, threaded bool, err error) {
	if err := a.wait(ctx); err != nil {
		return "", false, err
	}
	_, ts, msg, err := a.c.PostMessageWithResponseContext(ctx, channel, opts...)
	return ts, msg.ThreadTimestamp != "", a.done(err)
}

func (a *api) update(ctx context.Context, channel, ts string, opts ...slack.MsgOption) error {
	if err := a.wait(ctx); err != nil {
		return err
	}
	_, _, _, err := a.c.UpdateMessageContext(ctx, channel, ts, opts...)
	return a.done(err)
}

func (a *api) ephemeral(ctx context.Context, channel, user string, opts ...slack.MsgOption) error {
	if err := a.wait(ctx); err != nil {
		return err
	}
	_, err := a.c.PostEphemeralContext(ctx, channel, user, opts...)
	return a.done(err)
}

func (a *api) authTest(ctx context.Context) (*slack.AuthTestResponse, error) {
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	res, err := a.c.AuthTestContext(ctx)
	return res, a.done(err)
}

func (a *api) history(ctx context.Context, p *slack.GetConversationHistoryParameters) (*slack.GetConversationHistoryResponse, error) {
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	res, err := a.c.GetConversationHistoryContext(ctx, p)
	return res, a.done(err)
}

// authErrors are the Web API errors that say the token is unusable.
var authErrors = map[string]bool{
	"invalid_auth": true, "not_authed": true, "account_inactive": true, "token_revoked": true,
	"token_expired": true, "no_permission": true, "org_login_required": true, "team_access_not_granted": true,
}

// setupErrors are errors that a Slack admin fixes (invite the bot, grant
// a scope, unarchive the channel): mirroring waits for the fix rather than
// dropping messages.
var setupErrors = map[string]bool{
	"not_in_channel": true, "channel_not_found": true, "missing_scope": true, "is_archived": true,
	"ekm_access_denied": true, "access_denied": true, "restricted_action": true,
}

// serverErrors are Slack's own transient failures, given as ok:false.
var serverErrors = map[string]bool{
	"internal_error": true, "fatal_error": true, "service_unavailable": true, "request_timeout": true,
	"ratelimited": true,
}

// classify turns a Web API error into what the follower should do with the
// message: retry it (transient: network, 5xx, 429, a setup or token problem
// someone will fix) or skip it (bridge.Permanent: Slack refuses this
// message itself, e.g. msg_too_long, with an error code not listed above).
func classify(err error) error {
	if err == nil {
		return nil
	}
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		if authErrors[se.Err] || setupErrors[se.Err] || serverErrors[se.Err] {
			return err
		}
		return bridge.Permanent("Slack refused the message: "+se.Err, err)
	}
	// Network errors, 429, 5xx, and other HTTP statuses (Slack answers 200
	// for anything about the message itself, so another status means a
	// proxy or api_base problem): retry.
	return err
}
