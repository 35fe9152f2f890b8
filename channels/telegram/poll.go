package telegram

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-telegram/bot"
)

// pollLimit is how many updates one getUpdates call asks for (the Bot
// API's maximum).
const pollLimit = 100

// maxPollBackoff bounds the wait between failed polls.
const maxPollBackoff = 30 * time.Second

// Poller is the getUpdates loop of a channel in polling mode.
//
// Where the offset lives: at Telegram. An update is confirmed (and dropped
// by Telegram) only when getUpdates is called with an offset above its
// update_id, and the Poller asks with such an offset only after the update
// is stored. So after a crash or a restart the Poller starts with no
// offset, Telegram hands out every update not confirmed yet, and those
// stored before the crash are recognised by their dedup key and stored
// once. Nothing is kept on kefu's side: a stored offset would even be
// wrong after a week without updates, when Telegram restarts update ids at
// random.
//
// Updates are handled one at a time, in order. One that cannot be stored
// (the store or Telegram's file server is down) stops the batch: the
// Poller backs off and asks again from that update.
type Poller struct {
	c       *Channel
	client  *http.Client
	url     string // {api_base}/bot{token}/
	timeout time.Duration

	// handled, when set, is called after each update is stored and before
	// the offset moves past it (tests: a crash at that point).
	handled func(updateID int64)
}

func newPoller(c *Channel) *Poller {
	return &Poller{
		c: c,
		// The long poll holds the request for timeout; allow more.
		client:  &http.Client{Timeout: c.cfg.PollTimeout + 30*time.Second},
		url:     strings.TrimRight(c.cfg.APIBase, "/") + "/bot" + c.cfg.Token + "/",
		timeout: c.cfg.PollTimeout,
	}
}

// Run polls until ctx ends and returns nil then. It first deletes any
// webhook (getUpdates is refused while one is set), keeping the updates
// Telegram holds. Errors are logged and retried with backoff, honouring a
// 429's retry_after; Run never gives up on its own.
func (p *Poller) Run(ctx context.Context) error {
	log := p.c.log
	for attempt := 1; ; attempt++ {
		_, err := p.c.bot.DeleteWebhook(ctx, &bot.DeleteWebhookParams{})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		p.c.noteAPIError(err)
		wait := retryWait(err, attempt)
		log.Warn("telegram: deleteWebhook failed; retrying", "in", wait, "err", p.c.redact(err))
		if !sleep(ctx, wait) {
			return nil
		}
	}
	log.Info("telegram: polling for updates")

	var offset int64 // 0: from the oldest update not confirmed
	failures := 0
	fail := func(what string, err error) bool {
		failures++
		wait := retryWait(err, failures)
		log.Warn("telegram: "+what+"; retrying", "in", wait, "err", p.c.redact(err))
		return sleep(ctx, wait)
	}
	for ctx.Err() == nil {
		raws, err := p.getUpdates(ctx, offset)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.c.noteAPIError(err)
			if errors.Is(err, bot.ErrorConflict) {
				log.Error("telegram: Telegram refuses to hand out updates: a webhook is set, or another process polls this bot; run one kefu in polling mode per bot", "err", err)
			}
			if !fail("getUpdates failed", err) {
				return nil
			}
			continue
		}
		p.c.noteAPIOK()
		if len(raws) == 0 && offset > 0 {
			// Nothing new: everything below offset is confirmed by this
			// call, so ask from "the oldest unconfirmed" again. After a
			// week without updates Telegram starts update_id afresh, at
			// random: a kept offset above the new ids would confirm, and
			// so drop, each new update unseen.
			offset = 0
		}
		ok := true
		for _, raw := range raws {
			upd, perr := ParseUpdate(raw)
			if perr != nil {
				// Nothing kefu can store. Its id, if readable, lets the
				// offset move past it.
				var head struct {
					ID int64 `json:"update_id"`
				}
				_ = json.Unmarshal(raw, &head)
				log.Error("telegram: unreadable update skipped", "update_id", head.ID, "err", perr)
				if head.ID <= 0 {
					// The offset cannot move past it: slow down
					// rather than spin on it.
					ok = false
					if !fail("update without update_id", perr) {
						return nil
					}
					continue
				}
				offset = max(offset, head.ID+1)
				continue
			}
			if err := p.c.handle(ctx, upd); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				ok = false
				if !fail(fmt.Sprintf("update %d not stored", upd.ID), err) {
					return nil
				}
				break // ask again from this update
			}
			if p.handled != nil {
				p.handled(upd.ID)
			}
			offset = max(offset, upd.ID+1)
		}
		if ok {
			failures = 0
		}
	}
	return nil
}

// retryWait is how long to wait after the attempt-th consecutive failure:
// retry_after for a 429, else a backoff.
func retryWait(err error, attempt int) time.Duration {
	var tooMany *bot.TooManyRequestsError
	if errors.As(err, &tooMany) && tooMany.RetryAfter > 0 {
		return time.Duration(tooMany.RetryAfter) * time.Second
	}
	return backoff(attempt, maxPollBackoff)
}

// apiResponse is the Bot API's answer envelope.
type apiResponse struct {
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result"`
	ErrorCode   int             `json:"error_code"`
	Description string          `json:"description"`
	Parameters  struct {
		RetryAfter      int   `json:"retry_after"`
		MigrateToChatID int64 `json:"migrate_to_chat_id"`
	} `json:"parameters"`
}

// getUpdates makes one long-poll call, as a multipart form like every Bot
// API call of the library, and returns the updates undecoded (one bad
// update must not cost the batch). Its errors are the library's, so they
// are classified the same way.
func (p *Poller) getUpdates(ctx context.Context, offset int64) ([]json.RawMessage, error) {
	var body bytes.Buffer
	form := multipart.NewWriter(&body)
	allowed, _ := json.Marshal(AllowedUpdates)
	fields := [][2]string{
		{"limit", strconv.Itoa(pollLimit)},
		{"timeout", strconv.Itoa(int(p.timeout / time.Second))},
		{"allowed_updates", string(allowed)},
	}
	if offset > 0 {
		fields = append(fields, [2]string{"offset", strconv.FormatInt(offset, 10)})
	}
	for _, f := range fields {
		if err := form.WriteField(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	if err := form.Close(); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"getUpdates", &body)
	if err != nil {
		return nil, p.c.redact(err)
	}
	req.Header.Set("Content-Type", form.FormDataContentType())
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, p.c.redact(fmt.Errorf("getUpdates: %w", err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("getUpdates: read: %w", err)
	}
	var r apiResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("getUpdates: HTTP %d, not a Bot API answer: %w", resp.StatusCode, err)
	}
	if !r.OK {
		return nil, apiError("getUpdates", r)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(r.Result, &raws); err != nil {
		return nil, fmt.Errorf("getUpdates: result: %w", err)
	}
	return raws, nil
}

// apiError is the library's error for a failed answer.
func apiError(method string, r apiResponse) error {
	switch r.ErrorCode {
	case http.StatusTooManyRequests:
		return &bot.TooManyRequestsError{Message: fmt.Sprintf("%s, %s", bot.ErrorTooManyRequests, r.Description), RetryAfter: r.Parameters.RetryAfter}
	case http.StatusConflict:
		return fmt.Errorf("%w, %s", bot.ErrorConflict, r.Description)
	case http.StatusUnauthorized:
		return fmt.Errorf("%w, %s", bot.ErrorUnauthorized, r.Description)
	case http.StatusNotFound:
		return fmt.Errorf("%w, %s", bot.ErrorNotFound, r.Description)
	case http.StatusForbidden:
		return fmt.Errorf("%w, %s", bot.ErrorForbidden, r.Description)
	case http.StatusBadRequest:
		return fmt.Errorf("%w, %s", bot.ErrorBadRequest, r.Description)
	}
	return fmt.Errorf("%s: error %d, %s", method, r.ErrorCode, r.Description)
}
