package wecom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels/wechat/wxapi"
	"github.com/kefuhq/kefu/core"
)

const (
	sendURL   = DefaultAPIBase + "/cgi-bin/message/send"
	uploadURL = DefaultAPIBase + "/cgi-bin/media/upload"
)

// maxImageBytes is Work WeChat's limit for an image app message (JPG, PNG).
const maxImageBytes = 10 << 20

// rateLimitWait is how long a member's messages wait after Work WeChat's
// frequency limit (45009, 45033).
const rateLimitWait = time.Minute

// appMessage is the body of message/send, as Work WeChat documents it.
// (The library's SendRequestCommon declares agentid as a string; the
// documented field is an integer.)
type appMessage struct {
	ToUser  string     `json:"touser"`
	MsgType string     `json:"msgtype"`
	AgentID int64      `json:"agentid"`
	Text    *textField `json:"text,omitempty"`
	Image   *mediaRef  `json:"image,omitempty"`
}

type textField struct {
	Content string `json:"content"`
}

type mediaRef struct {
	MediaID string `json:"media_id"`
}

// sendAnswer is what message/send answers besides errcode. A recipient
// outside the app's visible range is named in invaliduser with errcode 0.
type sendAnswer struct {
	InvalidUser    string `json:"invaliduser"`
	UnlicensedUser string `json:"unlicenseduser"`
	MsgID          string `json:"msgid"`
}

// Send implements bridge.Sender: it sends one app message (a payload entry
// this channel enqueued) to its member.
func (c *Channel) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	if out.Message != nil {
		return bridge.SendResult{}, bridge.Permanent("the wecom channel has no customers to deliver to", errors.New("wecom: outbox entry with a message"))
	}
	var n note
	if err := json.Unmarshal(out.Entry.Payload, &n); err != nil || n.To == "" || (n.Text == "" && n.Media == nil) {
		return bridge.SendResult{}, bridge.Permanent("malformed wecom notification", fmt.Errorf("wecom: outbox entry %d: %v", out.Entry.ID, err))
	}
	if ok, wait := c.limiter.Allow(strings.ToLower(n.To)); !ok {
		return bridge.SendResult{}, bridge.RetryAfter(wait, fmt.Errorf("wecom: pacing messages to %s", n.To))
	}
	msg := appMessage{ToUser: n.To, AgentID: c.cfg.AgentID}
	if n.Media != nil {
		id, err := c.upload(ctx, n.Media)
		if err != nil {
			return bridge.SendResult{}, sendError(n.To, err)
		}
		msg.MsgType, msg.Image = "image", &mediaRef{MediaID: id}
	} else {
		msg.MsgType, msg.Text = "text", &textField{Content: n.Text}
	}
	var ans sendAnswer
	err := c.tokens.Do(ctx, func(tok string) error {
		return wxapi.PostJSON(ctx, "message/send", sendURL+"?access_token="+url.QueryEscape(tok), msg, &ans)
	})
	if err == nil && (ans.InvalidUser != "" || ans.UnlicensedUser != "") {
		return bridge.SendResult{}, bridge.Permanent(
			fmt.Sprintf("Work WeChat cannot reach %s: not a member, outside the app's visible range, or without a licence", n.To),
			fmt.Errorf("wecom: invaliduser %q unlicenseduser %q", ans.InvalidUser, ans.UnlicensedUser))
	}
	return bridge.SendResult{ExternalID: ans.MsgID}, sendError(n.To, err)
}

// HasMedia implements bridge.MediaSender: a notification with an image
// uploads it inside Send, and gets the Deliverer's time for attachments.
func (c *Channel) HasMedia(e core.OutboxEntry) bool {
	var n note
	return json.Unmarshal(e.Payload, &n) == nil && n.Media != nil
}

// upload sends an image from kefu's media storage to Work WeChat as
// temporary media; one it would refuse (type, size) goes as its preview.
func (c *Channel) upload(ctx context.Context, m *core.Media) (string, error) {
	key, name, typ := m.Key, m.Name, m.Type
	if (typ != "image/jpeg" && typ != "image/png") || m.Size > maxImageBytes {
		if m.Preview == "" {
			return "", bridge.Permanent(fmt.Sprintf("Work WeChat does not take this image (%s, %d bytes)", m.Type, m.Size), errors.New("wecom: image refused before upload"))
		}
		key, name, typ = m.Preview, "image.jpg", "image/jpeg"
	}
	if name == "" {
		name = "image"
	}
	var id string
	err := c.tokens.Do(ctx, func(tok string) error {
		r, _, err := c.media.Open(ctx, key)
		if err != nil {
			if errors.Is(err, core.ErrNotFound) {
				return bridge.Permanent("the image is gone from kefu's storage", err)
			}
			return err
		}
		defer r.Close()
		id, err = wxapi.Upload(ctx, "media/upload", uploadURL+"?access_token="+url.QueryEscape(tok)+"&type=image", name, typ, io.LimitReader(r, maxImageBytes+1))
		return err
	})
	return id, err
}

// sendError turns an API failure into what the outbox does with the entry.
// Token failures (a wrong secret, the server's IP not among the app's
// trusted IPs) are retried, so that notifications go out once an admin
// fixes the setup; /readyz reports them meanwhile.
func sendError(to string, err error) error {
	if err == nil {
		return nil
	}
	var perm *bridge.PermanentError
	if errors.As(err, &perm) {
		return err
	}
	var ae *wxapi.APIError
	if errors.As(err, &ae) {
		if ae.API == "gettoken" {
			return err
		}
		switch ae.Code {
		case wxapi.CodeAPIFreqLimit, wxapi.CodeAPIConcurrency:
			return bridge.RetryAfter(rateLimitWait, err)
		case wxapi.CodeWorkUserInvalid, wxapi.CodeWorkUserNotFound:
			return bridge.Permanent(fmt.Sprintf("Work WeChat cannot reach %s (errcode %d)", to, ae.Code), err)
		case wxapi.CodeSystemBusy, wxapi.CodeInvalidToken, wxapi.CodeInvalidToken2, wxapi.CodeTokenExpired, wxapi.CodeWorkIPNotAllowed:
			return err
		}
		return bridge.Permanent(fmt.Sprintf("Work WeChat refused the message (errcode %d)", ae.Code), err)
	}
	var he *wxapi.HTTPError
	if errors.As(err, &he) && !he.Transient() {
		return bridge.Permanent(fmt.Sprintf("Work WeChat refused the request (HTTP %d)", he.Status), err)
	}
	return err
}
