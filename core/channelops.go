package core

import (
	"context"
	"fmt"
)

// Service methods that customer channels call besides Ingest.

// BotMessage appends an automatic public message from kefu (a channel's
// greeting, an auto-reply) to a conversation and delivers it to the
// customer like an agent's reply: through the conversation's channel (the
// outbox) or its sockets. Unlike a reply it neither takes nor reopens the
// conversation. Set m.DedupKey to make it once: a repeat returns the stored
// message and sends nothing.
func (s *Service) BotMessage(ctx context.Context, convID int64, m Message) (Message, error) {
	m.SenderKind, m.SenderID, m.Visibility = SenderBot, 0, Public
	m.Text = StorableText(m.Text)
	if err := checkContent(m); err != nil {
		return Message{}, err
	}
	c, err := s.store.Conversation(ctx, convID)
	if err != nil {
		return Message{}, err
	}
	return s.appendAndNotify(ctx, c, m)
}

// MoveIdentity records that a customer's id on a channel instance changed
// (a Telegram chat migrated to a new chat id): the identity and its
// conversations move to the new id (see Store.MoveIdentity).
func (s *Service) MoveIdentity(ctx context.Context, channel, from, to string) error {
	if err := s.store.MoveIdentity(ctx, channel, from, to); err != nil {
		return fmt.Errorf("move identity %s/%s to %s: %w", channel, from, to, err)
	}
	s.log.Info("customer identity moved", "channel", channel, "from", from, "to", to)
	return nil
}
