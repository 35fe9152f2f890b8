package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

const mediaGetURL = DefaultAPIBase + "/cgi-bin/media/get"

// accept stores one verified callback, fetching its media first. It
// returns nil once the message is committed (or handed to a media job, or
// deliberately dropped); an error means nothing was stored and WeChat
// should retry.
func (c *Channel) accept(ctx context.Context, in inbound) error {
	at := c.now()
	if in.OnlyIfActive {
		active, err := c.hasActive(ctx, in.OpenID)
		if err != nil || !active {
			return err
		}
	}
	if in.MediaID == "" && in.PicURL == "" {
		return c.store(ctx, in, nil, at)
	}
	mctx, cancel := context.WithTimeout(ctx, c.mediaBudget)
	m, err := c.fetchMedia(mctx, in)
	cancel()
	switch {
	case err == nil:
		return c.store(ctx, in, &m, at)
	case permanentMediaError(err):
		c.log.Warn("wechat: customer media not kept", "err", err)
		return c.store(ctx, in.withoutMedia(err), nil, at)
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return c.enqueueJob(ctx, in, at, err)
	}
}

// store ingests the message. A message the core refuses as invalid is
// dropped (logged): WeChat's retries would be refused the same way.
func (c *Channel) store(ctx context.Context, in inbound, m *core.Media, at time.Time) error {
	var welcome *core.Message
	if in.Welcome && c.cfg.Welcome != "" {
		welcome = &core.Message{Kind: core.KindText, Text: c.cfg.Welcome,
			DedupKey: core.ProviderKey(c.name, "welcome:"+in.ID)} // once per follow, across WeChat's retries
	}
	res, err := c.svc.Ingest(ctx, core.Inbound{
		Channel:     c.name,
		ExternalID:  in.OpenID,
		KeepsWindow: in.KeepsWindow,
		Message: core.Message{
			Kind:      in.Kind,
			Text:      in.Text,
			Media:     m,
			DedupKey:  core.ProviderKey(c.name, in.ID),
			CreatedAt: at,
		},
		Greeting: welcome, // before any offline reply
	})
	if err != nil && welcome != nil && res.Message.ID != 0 {
		// Stored and routed; only the welcome failed.
		c.log.Warn("wechat: welcome not sent", "conversation", res.Message.ConversationID, "err", err)
		return nil
	}
	if m != nil && (err != nil || res.Duplicate) {
		c.discard(*m) // a retry fetched it again, or nothing holds it
	}
	switch {
	case errors.Is(err, core.ErrInvalid):
		c.log.Warn("wechat: callback refused by the core; dropped", "id", in.ID, "err", err)
		return nil
	case err != nil:
		return err
	}
	return nil
}

func (c *Channel) discard(m core.Media) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.media.Delete(ctx, m.Key); err != nil && !errors.Is(err, core.ErrNotFound) {
		c.log.Warn("wechat: could not delete unused media", "key", m.Key, "err", err)
	}
}

// hasActive reports whether the customer has a waiting or open conversation
// on this channel.
func (c *Channel) hasActive(ctx context.Context, openID string) (bool, error) {
	convs, err := c.svc.Store().Conversations(ctx, core.ConversationFilter{
		Channel: c.name, ExternalID: openID,
		Statuses: []core.ConversationStatus{core.StatusPending, core.StatusOpen}, Limit: 1,
	})
	return len(convs) > 0, err
}

// fetchMedia downloads the callback's media through the media API (with the
// token retried once), or from the image's direct URL when the API has no
// file for it.
func (c *Channel) fetchMedia(ctx context.Context, in inbound) (core.Media, error) {
	var m core.Media
	err := errors.New("no media id")
	if in.MediaID != "" {
		err = c.tokens.Do(ctx, func(tok string) error {
			var ferr error
			m, ferr = wxapi.FetchMedia(ctx, "media/get", c.media, mediaGetURL+"?access_token="+url.QueryEscape(tok)+"&media_id="+url.QueryEscape(in.MediaID), in.MediaName)
			return ferr
		})
	}
	if err != nil && in.PicURL != "" && (in.MediaID == "" || permanentMediaError(err)) {
		req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, in.PicURL, nil)
		if rerr != nil {
			return core.Media{}, fmt.Errorf("%w: image URL: %w", core.ErrInvalid, rerr)
		}
		return c.media.Fetch(ctx, wxapi.Client(), req, in.MediaName)
	}
	return m, err
}

// permanentMediaError reports whether fetching again cannot help: the file
// is refused by kefu's media policy, gone from WeChat, or WeChat refuses
// the media id.
func permanentMediaError(err error) bool {
	if errors.Is(err, core.ErrInvalid) || errors.Is(err, core.ErrNotFound) {
		return true
	}
	if code, ok := wxapi.Code(err); ok {
		switch code {
		case wxapi.CodeSystemBusy, wxapi.CodeAPIFreqLimit, wxapi.CodeInvalidToken, wxapi.CodeInvalidToken2, wxapi.CodeTokenExpired,
			wxapi.CodeIPNotAllowed, wxapi.CodeInvalidAppID, wxapi.CodeInvalidSecret:
			return false
		}
		return true
	}
	return false
}

// withoutMedia is in as a text message saying what could not be kept.
func (in inbound) withoutMedia(err error) inbound {
	why := "could not be fetched from WeChat"
	switch {
	case errors.Is(err, media.ErrTooLarge):
		why = "too large to keep"
	case errors.Is(err, media.ErrTypeNotAllowed):
		why = "file type not accepted"
	case errors.Is(err, core.ErrNotFound):
		why = "expired on WeChat"
	default:
		if code, ok := wxapi.Code(err); ok && code == wxapi.CodeInvalidMediaID {
			why = "expired on WeChat"
		}
	}
	in.Kind, in.MediaID, in.PicURL = core.KindText, "", ""
	in.Text = in.Fallback + " (" + why + ")"
	return in
}

// job is the payload of an outbox entry that finishes a callback whose
// media WeChat's API did not deliver within the callback's time.
type job struct {
	In inbound   `json:"in"`
	At time.Time `json:"at"` // when the callback arrived
}

// enqueueJob commits the callback as a job in this channel's outbox (key
// per customer, so one customer's jobs run in order) and kicks delivery.
func (c *Channel) enqueueJob(ctx context.Context, in inbound, at time.Time, cause error) error {
	payload, err := json.Marshal(job{In: in, At: at})
	if err != nil {
		return err
	}
	e, err := c.svc.Store().Enqueue(ctx, core.OutboxEntry{Channel: c.name, Key: "in:" + in.OpenID, Payload: payload, CreatedAt: at})
	if err != nil {
		return err
	}
	c.log.Info("wechat: media not fetched in time; the message will be stored once it is", "entry", e.ID, "err", cause)
	if c.kicker != nil {
		c.kicker.Deliver(ctx, e)
	}
	return nil
}

// runJob finishes a job: fetch the media, store the message. Fetch
// failures are retried by the outbox with backoff; after mediaGiveUp the
// message is stored without its media rather than lost.
func (c *Channel) runJob(ctx context.Context, e core.OutboxEntry) (bridge.SendResult, error) {
	var j job
	if err := json.Unmarshal(e.Payload, &j); err != nil || j.In.OpenID == "" || j.In.ID == "" {
		return bridge.SendResult{}, bridge.Permanent("malformed wechat job", fmt.Errorf("wechat: outbox entry %d: %v", e.ID, err))
	}
	m, err := c.fetchMedia(ctx, j.In)
	switch {
	case err == nil:
		err = c.store(ctx, j.In, &m, j.At)
	case permanentMediaError(err) || c.now().Sub(j.At) > mediaGiveUp:
		c.log.Warn("wechat: customer media not kept", "entry", e.ID, "err", err)
		err = c.store(ctx, j.In.withoutMedia(err), nil, j.At)
	}
	return bridge.SendResult{}, err
}
