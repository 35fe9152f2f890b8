package wechat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/silenceper/wechat/v2/officialaccount/message"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/core"
)

const (
	customSendURL  = DefaultAPIBase + "/cgi-bin/message/custom/send"
	mediaUploadURL = DefaultAPIBase + "/cgi-bin/media/upload"
)

// WeChat's limits on temporary media sent in customer-service messages.
const (
	maxImageBytes = 10 << 20
	maxVoiceBytes = 2 << 20
)

// rateLimitWait is how long a message waits after WeChat's frequency limit.
const rateLimitWait = time.Minute

// Send implements bridge.Sender. For a message it sends one
// customer-service message to the conversation's openid, and for an image
// or voice with a caption a text message after it (WeChat's media messages
// carry none); for a payload entry it runs a media job (see runJob).
func (c *Channel) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	if out.Message == nil {
		return c.runJob(ctx, out.Entry)
	}
	if out.Conversation == nil || out.Conversation.ExternalID == "" {
		return bridge.SendResult{}, bridge.Permanent("no WeChat customer to send to", errors.New("wechat: message without conversation"))
	}
	m, openID := out.Message, out.Conversation.ExternalID
	caption := ""
	if m.Kind != core.KindText {
		caption = m.Text
	}
	if _, due := c.captionDue.Load(m.ID); !due || caption == "" {
		msg, err := c.customerMessage(ctx, m, openID)
		if err == nil {
			err = c.post(ctx, msg)
		}
		if err != nil || caption == "" {
			return bridge.SendResult{}, sendError(err)
		}
		c.captionDue.Store(m.ID, c.now())
		c.forgetCaptions(c.now().Add(-captionMemory))
	}
	err := sendError(c.post(ctx, message.NewCustomerTextMessage(openID, caption)))
	var perm *bridge.PermanentError
	if err == nil || errors.As(err, &perm) {
		c.captionDue.Delete(m.ID)
	}
	if err != nil && perm != nil {
		return bridge.SendResult{}, bridge.Permanent("the "+string(m.Kind)+" was sent, its caption was not: "+perm.Reason, perm.Err)
	}
	return bridge.SendResult{}, err
}

// captionMemory is how long a caption still due is remembered: past
// WeChat's 48-hour window no retry can send it, and the outbox has given up.
const captionMemory = 48 * time.Hour

// forgetCaptions drops the captions due since before t (their outbox entry
// gave up, or moved to another node).
func (c *Channel) forgetCaptions(t time.Time) {
	c.captionDue.Range(func(k, v any) bool {
		if at, ok := v.(time.Time); ok && at.Before(t) {
			c.captionDue.Delete(k)
		}
		return true
	})
}

// post sends one customer-service message.
func (c *Channel) post(ctx context.Context, msg *message.CustomerMessage) error {
	return c.tokens.Do(ctx, func(tok string) error {
		return wxapi.PostJSON(ctx, "message/custom/send", customSendURL+"?access_token="+url.QueryEscape(tok), msg, nil)
	})
}

// customerMessage builds the customer-service message for m, uploading its
// media as temporary media first.
func (c *Channel) customerMessage(ctx context.Context, m *core.Message, openID string) (*message.CustomerMessage, error) {
	switch m.Kind {
	case core.KindText:
		return message.NewCustomerTextMessage(openID, m.Text), nil
	case core.KindImage:
		id, err := c.upload(ctx, m.Media, "image", maxImageBytes, "image/jpeg", "image/png", "image/gif", "image/bmp")
		if err != nil {
			return nil, err
		}
		return message.NewCustomerImgMessage(openID, id), nil
	case core.KindFile:
		if m.Media != nil && (m.Media.Type == "audio/amr" || m.Media.Type == "audio/mpeg") {
			id, err := c.upload(ctx, m.Media, "voice", maxVoiceBytes, "audio/amr", "audio/mpeg")
			if err != nil {
				return nil, err
			}
			return message.NewCustomerVoiceMessage(openID, id), nil
		}
		return nil, bridge.Permanent("WeChat customer-service messages carry text, images and voice (AMR or MP3) only; send a link or an image instead",
			fmt.Errorf("wechat: cannot send a %s file", typeOf(m.Media)))
	default:
		return nil, bridge.Permanent("the WeChat channel sends text, images and voice only", fmt.Errorf("wechat: cannot send %s", m.Kind))
	}
}

func typeOf(m *core.Media) string {
	if m == nil {
		return "missing"
	}
	return m.Type
}

// upload sends kefu media to WeChat as temporary media of kind and returns
// its media_id. An image of a type or size WeChat refuses goes as its
// preview (a small JPEG) when there is one.
func (c *Channel) upload(ctx context.Context, m *core.Media, kind string, maxBytes int64, types ...string) (string, error) {
	if m == nil || m.Key == "" {
		return "", bridge.Permanent("the message's media is missing", errors.New("wechat: media without key"))
	}
	key, name, typ := m.Key, m.Name, m.Type
	ok := m.Size <= maxBytes
	if ok {
		ok = false
		for _, t := range types {
			ok = ok || t == m.Type
		}
	}
	if !ok {
		if kind != "image" || m.Preview == "" {
			return "", bridge.Permanent(fmt.Sprintf("WeChat does not accept this %s (%s, %d bytes)", kind, m.Type, m.Size), errors.New("wechat: media refused before upload"))
		}
		key, name, typ = m.Preview, "image.jpg", "image/jpeg"
	}
	if name == "" {
		name = kind
	}
	var id string
	err := c.tokens.Do(ctx, func(tok string) error {
		r, _, err := c.media.Open(ctx, key)
		if err != nil {
			if errors.Is(err, core.ErrNotFound) {
				return bridge.Permanent("the message's media is gone from kefu's storage", err)
			}
			return err
		}
		defer r.Close()
		id, err = wxapi.Upload(ctx, "media/upload", mediaUploadURL+"?access_token="+url.QueryEscape(tok)+"&type="+kind, name, typ, io.LimitReader(r, maxBytes+1))
		return err
	})
	return id, err
}

// sendError turns an API failure into what the outbox should do with the
// message: WeChat's refusals that retrying cannot fix are permanent with a
// reason agents understand; throttling waits; the rest is retried.
func sendError(err error) error {
	if err == nil {
		return nil
	}
	var perm *bridge.PermanentError
	if errors.As(err, &perm) {
		return err
	}
	if code, ok := wxapi.Code(err); ok {
		var ae *wxapi.APIError
		msg := ""
		if errors.As(err, &ae) {
			msg = ae.Msg
		}
		switch code {
		case wxapi.CodeWindowClosed:
			return bridge.Permanent("WeChat's 48-hour window has closed: the customer must write to the Official Account again first (errcode 45015)",
				fmt.Errorf("%w: %w", core.ErrWindowClosed, err))
		case wxapi.CodeResponseCount:
			return bridge.Permanent("WeChat allows at most 20 messages until the customer writes again (errcode 45047)", err)
		case wxapi.CodeUnsubscribed:
			return bridge.Permanent("the customer no longer follows the Official Account (errcode 43004)", err)
		case wxapi.CodeInvalidOpenID:
			return bridge.Permanent("WeChat does not know this customer for this Official Account (errcode 40003)", err)
		case wxapi.CodeAPIUnauthorized:
			return bridge.Permanent("the Official Account may not send customer-service messages (errcode 48001): it must be a verified service account", err)
		case wxapi.CodeInvalidAppID, wxapi.CodeInvalidSecret:
			return bridge.Permanent(fmt.Sprintf("WeChat refused the channel's app_id or app_secret (errcode %d)", code), err)
		case wxapi.CodeAPIFreqLimit:
			return bridge.RetryAfter(rateLimitWait, err)
		case wxapi.CodeSystemBusy, wxapi.CodeInvalidToken, wxapi.CodeInvalidToken2, wxapi.CodeTokenExpired, wxapi.CodeIPNotAllowed:
			return err // transient; the IP allow-list is fixed by an admin while the outbox retries
		default:
			return bridge.Permanent(fmt.Sprintf("WeChat refused the message (errcode %d: %s)", code, clean(msg, 200)), err)
		}
	}
	var he *wxapi.HTTPError
	if errors.As(err, &he) && !he.Transient() {
		return bridge.Permanent(fmt.Sprintf("WeChat refused the request (HTTP %d)", he.Status), err)
	}
	return err
}
