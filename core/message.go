package core

import (
	"fmt"
	"strings"
)

// PrepareMessage fills the defaults every store applies to a message it
// writes (Visibility public, Kind from the content, Status sent), clears
// the IDs the store assigns, and checks the result. Its errors wrap
// ErrInvalid. Stores call it so that every backend accepts, and stores, the
// same messages; CreatedAt is left to the store's clock.
func PrepareMessage(m *Message) error {
	m.ID, m.ConversationID, m.Seq = 0, 0, 0
	if m.Visibility == "" {
		m.Visibility = Public
	}
	if m.Kind == "" {
		switch {
		case m.Event != nil:
			m.Kind = KindEvent
		case m.Media != nil && strings.HasPrefix(m.Media.Type, "image/"):
			m.Kind = KindImage
		case m.Media != nil:
			m.Kind = KindFile
		default:
			m.Kind = KindText
		}
	}
	if m.Status == "" {
		m.Status = MsgSent
	}
	switch {
	case m.Text == "" && m.Media == nil && m.Event == nil:
		return fmt.Errorf("%w: empty message", ErrInvalid)
	case m.SenderKind != SenderContact && m.SenderKind != SenderAgent &&
		m.SenderKind != SenderBot && m.SenderKind != SenderSystem:
		return fmt.Errorf("%w: sender kind %q", ErrInvalid, m.SenderKind)
	case m.Visibility != Public && m.Visibility != Internal:
		return fmt.Errorf("%w: visibility %q", ErrInvalid, m.Visibility)
	case !m.Status.Valid():
		return fmt.Errorf("%w: message status %q", ErrInvalid, m.Status)
	case m.Kind != KindText && m.Kind != KindImage && m.Kind != KindFile && m.Kind != KindEvent && m.Kind != KindTemplate:
		return fmt.Errorf("%w: content kind %q", ErrInvalid, m.Kind)
	case (m.Kind == KindEvent) != (m.Event != nil):
		return fmt.Errorf("%w: an event message needs kind %q and an event", ErrInvalid, KindEvent)
	case (m.Kind == KindImage || m.Kind == KindFile) && m.Media == nil:
		return fmt.Errorf("%w: a %s message needs media", ErrInvalid, m.Kind)
	}
	return nil
}

// FillEvent fills the parts of a caller's event message it left out: an
// Event of type t, sent by kefu.
func FillEvent(m Message, t EventType) Message {
	if m.Event == nil && m.Kind == "" && m.Text == "" && m.Media == nil {
		m.Event = &Event{Type: t}
	}
	if m.SenderKind == "" {
		m.SenderKind = SenderSystem
	}
	return m
}
