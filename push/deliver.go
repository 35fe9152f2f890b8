package push

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
)

// MaxBody is the most bytes of a message's text a notification carries
// (APNs caps the whole payload at 4 KiB; a lock screen shows far less).
const MaxBody = 512

// badgeConversations bounds how many of the recipient's conversations the
// badge counts.
const badgeConversations = 50

// Body is what a notification says of m: its text cut to MaxBody bytes on a
// UTF-8 boundary (with "…" when cut), or "[image]" / "[file]" for media
// (followed by the caption, if any).
func Body(m core.Message) string {
	var label string
	switch m.Kind {
	case core.KindImage:
		label = "[image]"
	case core.KindFile:
		label = "[file]"
	case core.KindTemplate:
		return "[message]"
	}
	text := m.Text
	if label != "" {
		if text == "" {
			return label
		}
		text = label + " " + text
	}
	return truncate(text, MaxBody)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence,
// ending a cut string with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// deliver sends e's notification to its recipient's devices, unless the
// recipient has the message by now.
func (f *Fallback) deliver(ctx context.Context, e *entry, pause pauseFunc) {
	log := f.log.With("conversation", e.conv.ID, "to", e.to.String(), "seq", e.msg.Seq)
	c, err := f.cfg.Store.Conversation(ctx, e.conv.ID)
	if err != nil {
		f.failed(ctx, log, "reading the conversation", err)
		return
	}
	var owner core.DeviceOwner
	if e.to == toAgent {
		if c.AssigneeID == 0 {
			f.cfg.Metrics.skipped("no_recipient")
			return
		}
		owner = core.AgentDevices(c.AssigneeID)
	} else {
		owner = core.IdentityDevices(c.Channel, c.ExternalID)
	}
	devices, err := f.cfg.Store.Devices(ctx, owner)
	if err != nil {
		f.failed(ctx, log, "reading devices", err)
		return
	}
	if len(f.cfg.Topics) > 0 {
		devices = slices.DeleteFunc(devices, func(d core.Device) bool { return !slices.Contains(f.cfg.Topics, d.Topic) })
	}
	if len(devices) == 0 {
		f.cfg.Metrics.skipped("no_device")
		return
	}
	if seen, err := f.seen(ctx, e.to, e.msg.ID); err != nil {
		f.failed(ctx, log, "reading the message", err)
		return
	} else if seen {
		f.cfg.Metrics.skipped("seen")
		return
	}
	n, err := f.compose(ctx, e.to, c, e.msg)
	if err != nil {
		f.failed(ctx, log, "composing the notification", err)
		return
	}
	for i, d := range devices {
		if i > 0 && f.superseded(e) {
			return // a newer message is on its way to them
		}
		n.Device = d
		if !f.send(ctx, log, e.to, n, pause) {
			return
		}
	}
}

// seen reports whether the message's recipient has it: its stored status
// is delivered or read (receipts and provider statuses move it). On the
// agent side only read counts: every agent's console acknowledges every
// customer message as delivered, which says nothing of the assignee, but
// read means someone had the conversation open in front of them.
func (f *Fallback) seen(ctx context.Context, to side, msgID int64) (bool, error) {
	m, err := f.cfg.Store.Message(ctx, msgID)
	if err != nil {
		return false, err
	}
	return m.Status == core.MsgRead || (to == toContact && m.Status == core.MsgDelivered), nil
}

func (f *Fallback) failed(ctx context.Context, log *slog.Logger, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	f.cfg.Metrics.result("error")
	log.Warn("push: "+what+" failed; no notification sent", "err", err)
}

// compose builds the notification for m (without its device).
func (f *Fallback) compose(ctx context.Context, to side, c core.Conversation, m core.Message) (Notification, error) {
	n := Notification{Body: Body(m), ConversationID: c.ID, Seq: m.Seq, MessageID: m.ID}
	var (
		cs  []core.Conversation
		err error
	)
	if to == toContact {
		if m.SenderKind == core.SenderAgent && m.SenderID != 0 {
			a, err := f.cfg.Store.Agent(ctx, m.SenderID)
			if err != nil {
				return n, err
			}
			n.Title = a.Name
		}
		cs, err = f.cfg.Store.Conversations(ctx, core.ConversationFilter{Channel: c.Channel, ExternalID: c.ExternalID, Limit: badgeConversations})
	} else {
		n.Title = c.Number()
		ct, cerr := f.cfg.Store.Contact(ctx, c.ContactID)
		if cerr != nil {
			return n, cerr
		}
		if ct.Name != "" {
			n.Title = ct.Name
		}
		cs, err = f.cfg.Store.Conversations(ctx, core.ConversationFilter{AssigneeID: c.AssigneeID,
			Statuses: []core.ConversationStatus{core.StatusOpen}, Limit: badgeConversations})
	}
	if err != nil {
		return n, err
	}
	ids := make([]int64, len(cs))
	for i, x := range cs {
		ids[i] = x.ID
	}
	last, err := f.cfg.Store.LastMessages(ctx, ids)
	if err != nil {
		return n, err
	}
	unread, err := core.UnreadCounts(ctx, f.cfg.Store, cs, last, to == toContact)
	if err != nil {
		return n, err
	}
	for _, u := range unread {
		n.Badge += u
	}
	return n, nil
}

// pauseFunc waits for at, off the worker's slot (so that one throttled
// device does not hold a worker other conversations need), and reports
// whether the push may go on: false once ctx has ended, or when a newer
// push for the same conversation side has taken over.
type pauseFunc func(at <-chan time.Time) bool

// send pushes n to its device, retrying temporary refusals with backoff
// while the recipient still has not seen the message. It reports false when
// the notification must go to no more devices: a pause said to stop, or the
// recipient has seen the message.
func (f *Fallback) send(ctx context.Context, log *slog.Logger, to side, n Notification, pause pauseFunc) bool {
	backoff := f.cfg.Backoff
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, f.cfg.AttemptTimeout)
		err := f.cfg.Pusher.Push(pctx, n)
		if err != nil && ctx.Err() == nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
			// This attempt timed out, not the run: a provider that stopped
			// answering is a network failure, retried like one.
			err = &RetryError{Err: err}
		}
		cancel()
		var retry *RetryError
		switch {
		case err == nil:
			f.setHealth(nil)
			f.cfg.Metrics.result("sent")
			log.Debug("push: sent", "device", shortToken(n.Device.Token))
			return true
		case ctx.Err() != nil:
			return false
		case errors.Is(err, ErrGone):
			f.cfg.Metrics.result("gone")
			if g := (*GoneError)(nil); errors.As(err, &g) && n.Device.UpdatedAt.Truncate(time.Second).After(g.Since) {
				// The app registered the token again after the provider
				// found it invalid: the registration is newer than the
				// refusal, and stays.
				log.Info("push: device token refused, but registered again since; kept", "device", shortToken(n.Device.Token),
					"registered", n.Device.UpdatedAt, "reason", err)
				return true
			}
			// Only the registration that was pushed: if the token has moved
			// to another owner since, or the app registered it again while
			// the push was on its way, that registration is not this one.
			switch rerr := f.cfg.Store.RemoveDevice(ctx, n.Device.Token, n.Device.Owner, n.Device.UpdatedAt); {
			case rerr == nil:
				log.Info("push: device token gone; removed", "device", shortToken(n.Device.Token), "reason", err)
			case errors.Is(rerr, core.ErrNotFound):
				log.Info("push: device token gone; registered again or removed since, so left as it is", "device", shortToken(n.Device.Token), "reason", err)
			default:
				log.Warn("push: device token gone; removing it failed", "device", shortToken(n.Device.Token), "err", rerr)
			}
			return true
		case errors.Is(err, ErrProviderAuth):
			f.cfg.Metrics.result("auth")
			f.setHealth(err)
			return true
		case errors.As(err, &retry) && attempt < f.cfg.Retries:
			f.cfg.Metrics.result("retry")
			wait := retry.After
			if wait <= 0 {
				wait = backoff
				backoff = min(2*backoff, MaxBackoff)
			}
			log.Debug("push: temporary refusal; retrying", "device", shortToken(n.Device.Token), "in", wait, "err", err)
			if !pause(f.cfg.Clock.At(f.cfg.Clock.Now().Add(wait))) {
				return false
			}
			if seen, serr := f.seen(ctx, to, n.MessageID); serr == nil && seen {
				f.cfg.Metrics.skipped("seen")
				return false
			}
		default:
			f.cfg.Metrics.result("failed")
			log.Warn("push: notification refused", "device", shortToken(n.Device.Token), "attempts", attempt+1, "err", err)
			return true
		}
	}
}

// shortToken is enough of a device token to tell devices apart in logs.
func shortToken(t string) string {
	if len(t) > 8 {
		return t[:8] + "…"
	}
	return t
}
