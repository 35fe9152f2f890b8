package whatsapp

import (
	"context"
	"errors"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Identities.
//
// WhatsApp knows a customer by their phone number (wa_id) and, since 2026,
// by a business-scoped user id (BSUID, "US.13491208655302741918"). A
// customer who adopts a username may stop sending their phone number, so a
// message can carry both ids, or only the BSUID. (Messages from before the
// BSUID rollout carry only the wa_id.) kefu keys the customer on one of them,
// the same for every message, so their conversation survives either id
// appearing or disappearing:
//
//   - A message without a BSUID is keyed on its wa_id.
//   - A message with a BSUID is keyed on whatever that BSUID was first seen
//     with: its wa_id if that first message had one (so a customer kefu knew
//     by phone number before the rollout keeps their conversation), else the
//     BSUID itself. The choice is recorded once, cluster-wide, with
//     Store.EnsureSetting under "whatsapp.NAME.bsuid.BSUID" (first writer
//     wins), and cached in memory.
//
// Replies go to the key: a wa_id through "to", a BSUID through "recipient"
// (isPhone tells them apart: a wa_id is digits only, a BSUID is not). A
// customer who changes their phone number gets a new wa_id and a new BSUID
// from WhatsApp, and so a new contact in kefu.

// aliasKey is the setting recording the identity a BSUID is keyed on.
func (c *Channel) aliasKey(userID string) string { return "whatsapp." + c.name + ".bsuid." + userID }

// identity returns the external id to key a sender on (see above).
func (c *Channel) identity(ctx context.Context, waID, userID string) (string, error) {
	if userID == "" {
		return waID, nil
	}
	if id, ok := c.aliases.get(userID); ok {
		return id, nil
	}
	want := waID
	if want == "" {
		want = userID
	}
	id, err := c.svc.Store().EnsureSetting(ctx, c.aliasKey(userID), want)
	if err != nil {
		return "", err
	}
	c.aliases.put(userID, id)
	return id, nil
}

// Statuses.
//
// Meta reports what became of a message kefu sent (sent, delivered, read,
// failed) by its wamid, which kefu stores as the message's ExternalID when
// the send returns. A status can beat that record: Meta may post "sent"
// before the Deliverer has written the wamid down. So Send also keeps the
// wamids of recent sends in memory (which covers a single node), and a
// status for a wamid kefu does not know yet, if it is recent, is answered
// 503 so that Meta repeats it a little later (which covers a cluster, where
// the webhook may reach another node). Statuses of messages kefu did not
// send (another tool on the same number) are ignored once they are older
// than statusGrace.

// statusGrace is how long kefu asks Meta to repeat a status for a wamid it
// does not know.
const statusGrace = 5 * time.Minute

// errNotYetKnown: a recent status for a wamid kefu has no record of yet.
var errNotYetKnown = errors.New("no message with this wamid yet; it may still be being recorded")

// coreStatus maps a WhatsApp status to kefu's; ok is false for statuses
// kefu does not track.
func coreStatus(s string) (core.MessageStatus, bool) {
	switch s {
	case "sent":
		return core.MsgSent, true
	case "delivered":
		return core.MsgDelivered, true
	case "read", "played": // played: a voice message was listened to
		return core.MsgRead, true
	case "failed":
		return core.MsgFailed, true
	}
	return "", false
}

// applyStatus moves the message a status is about forward; a status that
// would move it back (read, then a late delivered) changes nothing.
func (c *Channel) applyStatus(ctx context.Context, st statusItem) error {
	to, ok := coreStatus(st.status)
	if !ok {
		return nil
	}
	var id int64
	m, err := c.svc.Store().MessageByExternalID(ctx, c.name, st.wamid)
	switch {
	case err == nil:
		id = m.ID
	case !errors.Is(err, core.ErrNotFound):
		return err
	default:
		if sent, ok := c.sent.get(st.wamid); ok {
			id = sent
			break
		}
		if !st.at.IsZero() && c.now().Sub(st.at) < statusGrace {
			return errNotYetKnown
		}
		c.log.Debug("whatsapp: status for a message kefu did not send; ignored", "wamid", st.wamid, "status", st.status)
		return nil
	}
	u := core.StatusUpdate{MessageID: id, Status: to, ExternalID: st.wamid}
	if to == core.MsgFailed {
		u.Reason = statusReason(st.errors)
	}
	if _, err := c.svc.UpdateStatus(ctx, u); err != nil && !errors.Is(err, core.ErrNotFound) {
		return err
	}
	return nil
}
