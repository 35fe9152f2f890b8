package telegram

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// Upload limits of the Bot API.
const (
	maxPhotoUpload = 10 << 20 // a larger image goes as a document
	maxFileUpload  = 50 << 20
)

// Reasons shown to agents for messages Telegram will never take.
const (
	ReasonBlocked      = "the user blocked the bot"
	ReasonDeactivated  = "the user's Telegram account was deleted"
	ReasonChatNotFound = "the Telegram chat was not found"
	ReasonBadToken     = "Telegram rejects the bot token"
)

// Send implements bridge.Sender: it delivers one message to the customer's
// chat (the conversation's ExternalID) and reports "CHAT_ID:MESSAGE_ID" as
// the message's ExternalID (Telegram's message ids are unique per chat
// only). A chat that migrated is written at its new id, and the
// conversation moves there for good.
func (c *Channel) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	m, conv := out.Message, out.Conversation
	if m == nil || conv == nil {
		return bridge.SendResult{}, bridge.Permanent("nothing to deliver", errors.New("telegram: outbox entry without a message"))
	}
	chatID, err := strconv.ParseInt(conv.ExternalID, 10, 64)
	if err != nil {
		return bridge.SendResult{}, bridge.Permanent("not a Telegram chat", fmt.Errorf("telegram: chat id %q: %w", conv.ExternalID, err))
	}
	if err := sendable(m); err != nil {
		return bridge.SendResult{}, err
	}
	sent, err := c.deliver(ctx, chatID, m)
	var mig *bot.MigrateError
	if errors.As(err, &mig) && mig.MigrateToChatID != 0 && int64(mig.MigrateToChatID) != chatID {
		to := int64(mig.MigrateToChatID)
		c.log.Info("telegram: chat migrated; writing to its new id", "from", chatID, "to", to, "conversation", conv.ID)
		merr := c.svc.MoveIdentity(ctx, c.name, conv.ExternalID, strconv.FormatInt(to, 10))
		switch {
		case errors.Is(merr, core.ErrNotFound), errors.Is(merr, core.ErrConflict):
			// Moved already (another conversation of the chat), or the new
			// id is somebody kefu knows: send there this time all the same.
			c.log.Warn("telegram: conversation not moved to the migrated chat", "conversation", conv.ID, "err", merr)
		case merr != nil:
			// Nothing was sent: try again later.
			return bridge.SendResult{}, fmt.Errorf("telegram: chat %d migrated to %d: %w", chatID, to, merr)
		}
		chatID = to
		sent, err = c.deliver(ctx, chatID, m)
	}
	if err != nil {
		return bridge.SendResult{}, c.classify(err)
	}
	c.noteAPIOK()
	return bridge.SendResult{ExternalID: fmt.Sprintf("%d:%d", chatID, sent.ID)}, nil
}

// sendable refuses, for good, what Telegram would never take.
func sendable(m *core.Message) error {
	switch m.Kind {
	case core.KindText:
		if n := utf16Len(m.Text); n > maxTextLen {
			return bridge.Permanent(fmt.Sprintf("longer than Telegram's %d characters (%d); send it in parts", maxTextLen, n), nil)
		}
	case core.KindImage, core.KindFile:
		if m.Media == nil || m.Media.Key == "" {
			return bridge.Permanent("the message has no file", nil)
		}
		if n := utf16Len(m.Text); n > maxCaptionLen {
			return bridge.Permanent(fmt.Sprintf("a caption longer than Telegram's %d characters (%d)", maxCaptionLen, n), nil)
		}
		if m.Media.Size > maxFileUpload {
			return bridge.Permanent(fmt.Sprintf("a file over the %s a bot may send", mb(maxFileUpload)), nil)
		}
	default:
		return bridge.Permanent(fmt.Sprintf("Telegram cannot send %s messages", m.Kind), nil)
	}
	return nil
}

// deliver makes the Bot API call for m.
func (c *Channel) deliver(ctx context.Context, chatID int64, m *core.Message) (*models.Message, error) {
	if m.Kind == core.KindText {
		return c.bot.SendMessage(ctx, &bot.SendMessageParams{ChatID: chatID, Text: m.Text})
	}
	if m.Kind == core.KindImage && photoType(m.Media.Type) && m.Media.Size <= maxPhotoUpload {
		sent, err := c.upload(ctx, chatID, m, true)
		if err == nil || !errors.Is(err, bot.ErrorBadRequest) || chatGone(err) {
			return sent, err
		}
		// Refused as a photo (its dimensions or ratio): as a document.
		c.log.Info("telegram: image refused as a photo; sending it as a document", "message", m.ID, "err", describe(err))
	}
	return c.upload(ctx, chatID, m, false)
}

// upload sends m's file from media storage as a photo or a document.
func (c *Channel) upload(ctx context.Context, chatID int64, m *core.Message, photo bool) (*models.Message, error) {
	rc, _, err := c.media.Open(ctx, m.Media.Key)
	if errors.Is(err, core.ErrNotFound) {
		return nil, bridge.Permanent("the file is no longer in kefu's media storage", err)
	}
	if err != nil {
		return nil, fmt.Errorf("telegram: open media: %w", err)
	}
	defer rc.Close()
	file := &models.InputFileUpload{Filename: fileName(m.Media), Data: rc}
	if photo {
		return c.bot.SendPhoto(ctx, &bot.SendPhotoParams{ChatID: chatID, Photo: file, Caption: m.Text})
	}
	return c.bot.SendDocument(ctx, &bot.SendDocumentParams{ChatID: chatID, Document: file, Caption: m.Text})
}

// classify turns a Bot API error into the outbox's terms.
func (c *Channel) classify(err error) error {
	var perm *bridge.PermanentError
	var tooMany *bot.TooManyRequestsError
	low := strings.ToLower(err.Error())
	switch {
	case errors.As(err, &perm):
		return err
	case errors.As(err, &tooMany):
		// Not before retry_after; this conversation only.
		return bridge.RetryAfter(time.Duration(max(tooMany.RetryAfter, 1))*time.Second, c.redact(err))
	case errors.Is(err, bot.ErrorForbidden):
		reason := "Telegram refuses to deliver: " + describe(err)
		switch {
		case strings.Contains(low, "blocked"):
			reason = ReasonBlocked
		case strings.Contains(low, "deactivated"):
			reason = ReasonDeactivated
		}
		return bridge.Permanent(reason, c.redact(err))
	case chatGone(err):
		return bridge.Permanent(ReasonChatNotFound, c.redact(err))
	case errors.Is(err, bot.ErrorBadRequest):
		return bridge.Permanent("Telegram rejected the message: "+describe(err), c.redact(err))
	case errors.Is(err, bot.ErrorUnauthorized), errors.Is(err, bot.ErrorNotFound):
		c.noteAPIError(err)
		return bridge.Permanent(ReasonBadToken, c.redact(err))
	}
	// 5xx, network, timeouts: transient.
	return fmt.Errorf("telegram: %w", c.redact(err))
}

// chatGone reports a 400 "chat not found".
func chatGone(err error) bool {
	return errors.Is(err, bot.ErrorBadRequest) && strings.Contains(strings.ToLower(err.Error()), "chat not found")
}

// photoType reports whether Telegram shows a file of type t as a photo.
// Others (GIF, which sendPhoto would flatten) go as documents.
func photoType(t string) bool {
	return t == "image/jpeg" || t == "image/png" || t == "image/webp"
}

// fileName is the name a file is uploaded under.
func fileName(m *core.Media) string {
	if n := strings.TrimSpace(m.Name); n != "" {
		return n
	}
	return "file" + path.Ext(m.Key)
}
