package telegram

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
)

// MaxUpdateBytes bounds a webhook body. An update is a few KB (a message's
// text is at most 4096 characters).
const MaxUpdateBytes = 1 << 20

// maxDownload is the largest file the Bot API lets a bot download.
const maxDownload = 20 << 20

// maxNameLen bounds a contact's display name and a file name, in bytes.
const maxNameLen = 256

// ServeHTTP receives Telegram's updates at /webhooks/NAME (webhook mode).
// It checks the secret before it reads the body and answers 200 only after
// the update is stored (or found to need nothing stored); a 5xx makes
// Telegram send it again.
func (c *Channel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Mode != ModeWebhook {
		httpx.Error(w, http.StatusNotFound, httpx.CodeNotFound, "this Telegram channel polls; it takes no webhooks")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpx.Error(w, http.StatusMethodNotAllowed, httpx.CodeMethod, "use POST")
		return
	}
	if !c.secretOK(r.Header.Get(HeaderSecret)) {
		httpx.Error(w, http.StatusUnauthorized, httpx.CodeUnauthorized, "missing or wrong "+HeaderSecret)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxUpdateBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.Error(w, http.StatusRequestEntityTooLarge, httpx.CodeTooLarge, fmt.Sprintf("body over %d bytes", MaxUpdateBytes))
			return
		}
		httpx.Error(w, http.StatusBadRequest, httpx.CodeBadRequest, "could not read body")
		return
	}
	upd, err := ParseUpdate(body)
	if err != nil {
		httpx.FromError(w, c.log, err)
		return
	}
	if err := c.handle(r.Context(), upd); err != nil {
		c.log.Error("telegram: update not stored; Telegram will send it again", "update_id", upd.ID, "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "update not stored; retry")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// secretOK compares the header with the configured secret in constant time
// (over digests, so that not even the length leaks).
func (c *Channel) secretOK(got string) bool {
	if c.cfg.WebhookSecret == "" || got == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(c.cfg.WebhookSecret))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// ParseUpdate decodes one update as Telegram sends it (a webhook body or
// one element of getUpdates' result). Fields kefu does not know are
// ignored: the Bot API adds them often. Its errors are
// *httpx.RequestError (400).
func ParseUpdate(body []byte) (*models.Update, error) {
	var upd models.Update
	err := json.Unmarshal(body, &upd)
	var typeErr *json.UnmarshalTypeError
	if err != nil && (!errors.As(err, &typeErr) || upd.ID <= 0) {
		return nil, httpx.BadRequest("malformed update: %s", clip(err.Error(), 200))
	}
	// A field of an unexpected type (the Bot API changed it) is left out;
	// the rest of the update still counts.
	if upd.ID <= 0 {
		return nil, httpx.BadRequest("update without update_id")
	}
	return &upd, nil
}

// handle stores what an update carries for kefu: a customer's message in a
// private chat. It returns nil when the update is stored (or was already:
// the dedup key is its update_id) or needs nothing stored, and an error when
// it must be tried again (the store or Telegram's file server failed).
func (c *Channel) handle(ctx context.Context, upd *models.Update) error {
	m := upd.Message
	switch {
	case m == nil:
		c.log.Debug("telegram: update without a new message ignored", "update_id", upd.ID)
		return nil
	case m.Chat.ID == 0:
		c.log.Warn("telegram: message without a chat id ignored", "update_id", upd.ID)
		return nil
	case m.Chat.Type != models.ChatTypePrivate:
		// Groups, supergroups and channels are not customer chats.
		c.log.Debug("telegram: message outside a private chat ignored", "update_id", upd.ID, "chat_type", m.Chat.Type)
		return nil
	case m.From != nil && m.From.IsBot:
		return nil
	}
	// The update_id is the dedup key; the chat and message ids qualify it,
	// because Telegram may restart update ids at random after a week
	// without updates, and a new update must not pass for an old one.
	key := fmt.Sprintf("%d:%d:%d", upd.ID, m.Chat.ID, m.ID)
	msg, start, err := c.content(ctx, m)
	if err != nil {
		return err
	}
	if msg == nil {
		c.log.Debug("telegram: message with nothing kefu keeps ignored", "update_id", upd.ID)
		return nil
	}
	msg.DedupKey = core.ProviderKey(c.name, key)
	var greeting *core.Message
	if start && c.cfg.Greeting != "" {
		// Its own dedup key makes the greeting once, even when the update
		// is handled again after a crash.
		greeting = &core.Message{Kind: core.KindText, Text: c.cfg.Greeting, DedupKey: core.ProviderKey(c.name, key+":greeting")}
	}
	res, err := c.svc.Ingest(ctx, core.Inbound{
		Channel:    c.name,
		ExternalID: strconv.FormatInt(m.Chat.ID, 10),
		Name:       displayName(m.From, m.Chat),
		Message:    *msg,
		Greeting:   greeting,
	})
	if errors.Is(err, core.ErrInvalid) {
		// Nothing to store (blank text): retrying would not help.
		c.log.Warn("telegram: message not storable; ignored", "update_id", upd.ID, "err", err)
		return nil
	}
	if err != nil {
		// Not discarding msg.Media: the write may still commit.
		return fmt.Errorf("store update %d: %w", upd.ID, err)
	}
	if res.Duplicate && msg.Media != nil {
		c.discard(ctx, msg.Media.Key) // fetched again for an update already stored
	}
	return nil
}

// content turns a message into what kefu stores, fetching its file if it
// has one. It returns nil for a message with nothing kefu keeps (a service
// message), and start when the message is the /start command.
func (c *Channel) content(ctx context.Context, m *models.Message) (msg *core.Message, start bool, err error) {
	text := func(s string) *core.Message { return &core.Message{Kind: core.KindText, Text: s} }
	switch {
	case m.Text != "":
		return text(m.Text), isStart(m.Text), nil
	case len(m.Photo) > 0:
		p := largest(m.Photo)
		msg, err = c.file(ctx, fileRef{id: p.FileID, size: int64(p.FileSize), name: "photo.jpg", what: "photo"}, m.Caption)
	case m.Document != nil:
		d := m.Document
		msg, err = c.file(ctx, fileRef{id: d.FileID, size: d.FileSize, name: d.FileName, what: "document"}, m.Caption)
	case m.Voice != nil:
		msg, err = c.file(ctx, fileRef{id: m.Voice.FileID, size: m.Voice.FileSize, name: "voice.ogg", what: "voice message"}, m.Caption)
	case m.Video != nil:
		v := m.Video
		msg, err = c.file(ctx, fileRef{id: v.FileID, size: v.FileSize, name: orDefault(v.FileName, "video.mp4"), what: "video"}, m.Caption)
	case m.Audio != nil:
		a := m.Audio
		msg, err = c.file(ctx, fileRef{id: a.FileID, size: a.FileSize, name: orDefault(a.FileName, "audio.mp3"), what: "audio"}, m.Caption)
	case m.VideoNote != nil:
		msg, err = c.file(ctx, fileRef{id: m.VideoNote.FileID, size: int64(m.VideoNote.FileSize), name: "video-note.mp4", what: "video message"}, "")
	case m.Animation != nil:
		a := m.Animation
		msg, err = c.file(ctx, fileRef{id: a.FileID, size: a.FileSize, name: orDefault(a.FileName, "animation.mp4"), what: "animation"}, m.Caption)
	case m.Venue != nil:
		v := m.Venue
		return text(venueText(v)), false, nil
	case m.Location != nil:
		return text(locationText(*m.Location)), false, nil
	case m.Contact != nil:
		return text(contactText(m.Contact)), false, nil
	case m.Sticker != nil:
		return text(strings.TrimSpace("[sticker " + m.Sticker.Emoji + "]")), false, nil
	// What kefu does not carry is still shown, so that the agent knows the
	// customer wrote (service messages, a pin or a payment, stay out).
	case m.Dice != nil:
		return text(fmt.Sprintf("[dice %s: %d]", m.Dice.Emoji, m.Dice.Value)), false, nil
	case m.Poll != nil:
		return text(strings.TrimSuffix("[a poll: "+m.Poll.Question, ": ") + "]"), false, nil
	case m.Story != nil:
		return text("[a Telegram story, not shown here]"), false, nil
	case m.Game != nil:
		return text("[a Telegram game, not shown here]"), false, nil
	case m.Checklist != nil:
		return text("[a Telegram checklist, not shown here]"), false, nil
	default:
		return nil, false, nil
	}
	return msg, false, err
}

// fileRef is a file a customer sent.
type fileRef struct {
	id   string
	size int64  // as the update says; 0 when unknown
	name string // file name; may be empty
	what string // "photo", "document"…, for the text shown when it is not kept
}

// file fetches a customer's file into media storage (Telegram's links
// expire) and returns the message that shows it: an image or a file with
// the caption as text. A file kefu cannot keep (too large, a type not
// allowed) becomes a text message that says so, so the agent still knows
// something came. An error means try again later.
func (c *Channel) file(ctx context.Context, f fileRef, caption string) (*core.Message, error) {
	name := clip(strings.TrimSpace(f.name), maxNameLen)
	notKept := func(reason string) *core.Message {
		s := "[" + f.what
		if name != "" && f.what == "document" {
			s += " " + name
		}
		s += " not kept: " + reason + "]"
		if caption != "" {
			s += "\n" + caption
		}
		return &core.Message{Kind: core.KindText, Text: s}
	}
	switch {
	case f.size > maxDownload:
		return notKept(fmt.Sprintf("%s, over the %s a bot may download", mb(f.size), mb(maxDownload))), nil
	case f.size > c.media.MaxBytes():
		return notKept(fmt.Sprintf("%s, over kefu's limit of %s", mb(f.size), mb(c.media.MaxBytes()))), nil
	}
	tf, err := c.bot.GetFile(ctx, &bot.GetFileParams{FileID: f.id})
	if err != nil {
		if errors.Is(err, bot.ErrorBadRequest) {
			// "file is too big", an id Telegram no longer knows.
			return notKept("Telegram would not hand it over: " + describe(err)), nil
		}
		c.noteAPIError(err)
		return nil, fmt.Errorf("getFile: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.bot.FileDownloadLink(tf), nil)
	if err != nil {
		return nil, c.redact(fmt.Errorf("file link: %w", err))
	}
	med, err := c.media.Fetch(ctx, c.files, req, name)
	switch {
	case err == nil:
	case errors.Is(err, media.ErrTooLarge):
		return notKept(fmt.Sprintf("over kefu's limit of %s", mb(c.media.MaxBytes()))), nil
	case errors.Is(err, media.ErrTypeNotAllowed):
		return notKept("kefu does not accept " + lastPart(err)), nil
	case errors.Is(err, core.ErrNotFound):
		return notKept("Telegram's link to it expired"), nil
	case errors.Is(err, core.ErrInvalid):
		return notKept("it is empty"), nil
	default:
		return nil, c.redact(fmt.Errorf("download file: %w", err))
	}
	kind := core.KindFile
	if strings.HasPrefix(med.Type, "image/") {
		kind = core.KindImage
	}
	return &core.Message{Kind: kind, Text: caption, Media: &med}, nil
}

// discard deletes a file fetched for nothing.
func (c *Channel) discard(ctx context.Context, key string) {
	if err := c.media.Delete(context.WithoutCancel(ctx), key); err != nil {
		c.log.Warn("telegram: could not delete a file fetched twice", "key", key, "err", err)
	}
}

// redact removes the bot token (part of every Bot API and file URL) from
// err's text, keeping what err wraps.
func (c *Channel) redact(err error) error {
	if err == nil || !strings.Contains(err.Error(), c.cfg.Token) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), c.cfg.Token, "***"), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// isStart reports whether text is the /start command ("/start",
// "/start@my_bot", "/start PAYLOAD").
func isStart(text string) bool {
	cmd, _, _ := strings.Cut(text, " ")
	cmd, _, _ = strings.Cut(cmd, "@")
	return cmd == "/start"
}

// largest is the biggest size of a photo (Telegram sends several).
func largest(ps []models.PhotoSize) models.PhotoSize {
	best := ps[0]
	for _, p := range ps[1:] {
		if p.Width*p.Height > best.Width*best.Height ||
			(p.Width*p.Height == best.Width*best.Height && p.FileSize > best.FileSize) {
			best = p
		}
	}
	return best
}

// locationText is how a shared location is shown: the coordinates and a
// map link.
func locationText(l models.Location) string {
	s := fmt.Sprintf("Location: %.6f, %.6f\nhttps://www.openstreetmap.org/?mlat=%.6f&mlon=%.6f#map=16/%.6f/%.6f",
		l.Latitude, l.Longitude, l.Latitude, l.Longitude, l.Latitude, l.Longitude)
	if l.LivePeriod > 0 {
		s += "\n(live location: kefu keeps where it started)"
	}
	return s
}

// venueText is how a shared place is shown: its name and address, then
// its location.
func venueText(v *models.Venue) string {
	var parts []string
	for _, p := range []string{v.Title, v.Address} {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return "Venue: " + strings.Join(parts, ", ") + "\n" + locationText(v.Location)
}

// contactText is how a shared contact is shown: name, phone number, and
// the Telegram user id when the contact has one.
func contactText(ct *models.Contact) string {
	s := "Contact: " + strings.TrimSpace(ct.FirstName+" "+ct.LastName)
	if ct.PhoneNumber != "" {
		s += ", " + ct.PhoneNumber
	}
	if ct.UserID != 0 {
		s += fmt.Sprintf(" (Telegram user %d)", ct.UserID)
	}
	return s
}

// displayName is the customer's name: first and last name, else
// @username, from the sender (or the chat, which in a private chat is the
// same person).
func displayName(u *models.User, chat models.Chat) string {
	first, last, user := chat.FirstName, chat.LastName, chat.Username
	if u != nil {
		first, last, user = u.FirstName, u.LastName, u.Username
	}
	name := strings.Join(strings.Fields(first+" "+last), " ")
	if name == "" && user != "" {
		name = "@" + user
	}
	return clip(strings.ToValidUTF8(name, ""), maxNameLen)
}

// describe is a Bot API error's description, for people.
func describe(err error) string {
	s := err.Error()
	// The library writes "<kind>, <description>" (and "<kind>: …" for 400
	// with parameters).
	if _, after, ok := strings.Cut(s, ", "); ok {
		s = after
	}
	return clip(s, 200)
}

// lastPart is the text after an error's last ": " (media's errors end
// with the type they refused).
func lastPart(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return clip(s, 100)
}

func orDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

// mb renders a size in megabytes.
func mb(n int64) string {
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', -1, 64) + " MB"
}
