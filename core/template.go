package core

import (
	"context"
	"fmt"
	"strings"
)

// SendTemplate sends the channel's template called name (its key in the
// channel's config, e.g. "reopen") to the customer of a conversation, as an
// agent's reply of KindTemplate. Unlike Reply it is allowed after the
// conversation's reply window has closed: a provider-approved template is
// the one message WhatsApp accepts then, and the customer's answer opens the
// window again. Otherwise it behaves as Reply: a waiting conversation is
// taken for the agent, a resolved one reopened, and the message is committed
// and then delivered through the outbox.
//
// It is ErrInvalid on a channel that has no reply window or does not deliver
// through the outbox (templates mean nothing there). Whether the channel
// knows a template by that name is found out when it sends: an unknown name
// fails the message with a reason the agent sees.
func (s *Service) SendTemplate(ctx context.Context, agentID, convID int64, name string) (Message, error) {
	return s.Reply(ctx, agentID, convID, Message{Kind: KindTemplate, Text: strings.TrimSpace(name)})
}

// checkTemplate reports whether m, a KindTemplate message, may go to c.
func (s *Service) checkTemplate(c Conversation, m Message) error {
	switch {
	case m.Visibility != Public:
		return fmt.Errorf("%w: a template goes to the customer; it cannot be a note", ErrInvalid)
	case s.window(c.Channel) <= 0 || !s.delivers(c.Channel):
		return fmt.Errorf("%w: channel %s of #%d sends no templates", ErrInvalid, c.Channel, c.ID)
	}
	return nil
}
