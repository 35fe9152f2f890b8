package whatsapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kefuhq/kefu/core"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kefuhq/kefu/httpx"
)

// ObjectType is the "object" of every WhatsApp Business Account webhook.
const ObjectType = "whatsapp_business_account"

// Limits on what one inbound item may carry into the store.
const (
	maxTextLen = 64 << 10 // WhatsApp itself allows 4096 characters
	maxNameLen = 256
)

// ParseNotification decodes a webhook body. Decoding is lenient about
// fields (Meta adds them freely) but not about shape. Its errors are
// *httpx.RequestError (400).
func ParseNotification(body []byte) (Notification, error) {
	var n Notification
	if err := json.Unmarshal(body, &n); err != nil {
		return Notification{}, httpx.BadRequest("malformed JSON: %s", jsonProblem(err))
	}
	if n.Object != ObjectType {
		return Notification{}, httpx.BadRequest("object: want %q, got %q", ObjectType, clip(n.Object, 64))
	}
	return n, nil
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s: expected %s, got %s", te.Field, te.Type, te.Value)
	}
	return "unreadable"
}

// batch is what one notification asks kefu to do, in order: the customer
// messages to store and the statuses to apply, each checked and rendered.
// Building it does no I/O, so the parser can be fuzzed as a whole.
type batch struct {
	messages []inbound
	statuses []statusItem
	// skipped counts items left out: malformed, or for another number.
	skipped int
	// errors are account-level errors Meta reported in the notification.
	errors []EventError
}

// inbound is one customer message, ready to ingest once its media is
// fetched and its sender's identity resolved.
type inbound struct {
	wamid  string
	waID   string // the sender's phone number as WhatsApp gives it; may be empty
	userID string // the sender's business-scoped user id; may be empty
	name   string // profile name, else username
	typ    string // WhatsApp's message type

	// text is the message's text: its body, a media caption, or the
	// rendering of a location, contact card, button or the like.
	text string
	// media, when set, is to be fetched and stored with the message
	// (mediaWhat names it for people: "image", "voice message"…).
	media     *MediaRef
	mediaWhat string
	// reactTo is the wamid a reaction is about; emoji the reaction ("" = removed).
	reactTo string
	emoji   string
}

// statusItem is one status webhook entry.
type statusItem struct {
	wamid  string
	status string
	at     time.Time // zero when absent
	errors []EventError
}

var (
	waIDRe  = regexp.MustCompile(`^[0-9]{1,32}$`)
	bsuidRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// plan turns a notification into a batch for the number phoneNumberID.
func plan(n Notification, phoneNumberID string) batch {
	var b batch
	for _, e := range n.Entry {
		for _, ch := range e.Changes {
			if ch.Field != "messages" {
				continue
			}
			v := ch.Value
			if id := v.Metadata.PhoneNumberID; id != "" && id != phoneNumberID {
				b.skipped += len(v.Messages) + len(v.Statuses)
				continue
			}
			b.errors = append(b.errors, v.Errors...)
			for _, m := range v.Messages {
				in, ok := planMessage(m, v.Contacts)
				if !ok {
					b.skipped++
					continue
				}
				b.messages = append(b.messages, in)
			}
			for _, s := range v.Statuses {
				if !validID(s.ID) || s.Status == "" {
					b.skipped++
					continue
				}
				b.statuses = append(b.statuses, statusItem{wamid: s.ID, status: s.Status, at: unixTime(s.Timestamp), errors: s.Errors})
			}
		}
	}
	return b
}

// planMessage checks and renders one message. It reports false for a
// message kefu cannot store: no usable id or sender.
func planMessage(m InMessage, contacts []Contact) (inbound, bool) {
	if !validID(m.ID) {
		return inbound{}, false
	}
	in := inbound{wamid: m.ID, typ: m.Type, waID: cleanWaID(m.From), userID: cleanUserID(m.FromUserID)}
	if c, ok := senderContact(m, contacts); ok {
		if in.waID == "" {
			in.waID = cleanWaID(c.WaID)
		}
		if in.userID == "" {
			in.userID = cleanUserID(c.UserID)
		}
		in.name = c.Profile.Name
		if strings.TrimSpace(in.name) == "" {
			in.name = c.Profile.Username
		}
		in.name = clip(strings.TrimSpace(in.name), maxNameLen)
	}
	if in.waID == "" && in.userID == "" {
		return inbound{}, false
	}
	render(&in, m)
	in.text = clip(core.StorableText(in.text), maxTextLen) // as stored: NULs gone
	if in.media == nil && strings.TrimSpace(in.text) == "" {
		in.text = "[empty WhatsApp message]"
	}
	return in, true
}

// senderContact finds the message's sender among the change's contacts:
// by wa_id or BSUID, or the only contact when there is one.
func senderContact(m InMessage, contacts []Contact) (Contact, bool) {
	for _, c := range contacts {
		if (m.From != "" && c.WaID == m.From) || (m.FromUserID != "" && c.UserID == m.FromUserID) {
			return c, true
		}
	}
	if len(contacts) == 1 && m.From == "" && m.FromUserID == "" {
		return contacts[0], true
	}
	return Contact{}, false
}

// render sets in's text, media and reaction from the message's content.
// The text renderings are documented in docs/channels/whatsapp.md.
func render(in *inbound, m InMessage) {
	switch m.Type {
	case "text":
		if m.Text != nil {
			in.text = m.Text.Body
		}
	case "image", "audio", "video", "document", "sticker":
		ref, what := mediaOf(m)
		if ref == nil || !validID(ref.ID) {
			in.text = unsupported(m)
			return
		}
		in.media, in.mediaWhat, in.text = ref, what, ref.Caption
	case "location":
		if m.Location == nil {
			in.text = unsupported(m)
			return
		}
		in.text = renderLocation(*m.Location)
	case "contacts":
		in.text = renderCards(m.Contacts)
	case "interactive":
		in.text = renderInteractive(m)
	case "button":
		if m.Button == nil {
			in.text = unsupported(m)
			return
		}
		in.text = "[Button] " + m.Button.Text
	case "reaction":
		if m.Reaction == nil {
			in.text = unsupported(m)
			return
		}
		in.reactTo, in.emoji = m.Reaction.MessageID, m.Reaction.Emoji
		in.text = renderReaction(in.emoji, "")
	case "system":
		if m.System == nil || strings.TrimSpace(m.System.Body) == "" {
			in.text = unsupported(m)
			return
		}
		in.text = "[System] " + m.System.Body
	default:
		in.text = unsupported(m)
	}
}

func mediaOf(m InMessage) (*MediaRef, string) {
	switch m.Type {
	case "image":
		return m.Image, "image"
	case "audio":
		if m.Audio != nil && m.Audio.Voice {
			return m.Audio, "voice message"
		}
		return m.Audio, "audio"
	case "video":
		return m.Video, "video"
	case "document":
		return m.Document, "document"
	case "sticker":
		return m.Sticker, "sticker"
	}
	return nil, ""
}

// renderLocation: "[Location] Name, Address (lat, long) https://maps.google.com/?q=lat,long".
func renderLocation(l Location) string {
	lat := strconv.FormatFloat(l.Latitude, 'f', -1, 64)
	lng := strconv.FormatFloat(l.Longitude, 'f', -1, 64)
	var b strings.Builder
	b.WriteString("[Location] ")
	if place := joinNonEmpty(", ", l.Name, l.Address); place != "" {
		b.WriteString(place + " ")
	}
	fmt.Fprintf(&b, "(%s, %s) https://maps.google.com/?q=%s,%s", lat, lng, lat, lng)
	return b.String()
}

// renderCards: one "[Contact] Name, phone, email, company" line per card.
func renderCards(cards []SharedCard) string {
	if len(cards) == 0 {
		return "[Contact] (empty)"
	}
	lines := make([]string, 0, len(cards))
	for _, c := range cards {
		name := c.Name.FormattedName
		if name == "" {
			name = joinNonEmpty(" ", c.Name.FirstName, c.Name.LastName)
		}
		parts := []string{name}
		for _, p := range c.Phones {
			parts = append(parts, p.Phone)
		}
		for _, e := range c.Emails {
			parts = append(parts, e.Email)
		}
		if c.Org != nil {
			parts = append(parts, c.Org.Company)
		}
		line := joinNonEmpty(", ", parts...)
		if line == "" {
			line = "(empty)"
		}
		lines = append(lines, "[Contact] "+line)
	}
	return strings.Join(lines, "\n")
}

// renderInteractive: "[Button] Title", "[List] Title — Description" or
// "[Form] body".
func renderInteractive(m InMessage) string {
	i := m.Interactive
	switch {
	case i == nil:
	case i.ButtonReply != nil:
		return "[Button] " + i.ButtonReply.Title
	case i.ListReply != nil:
		return "[List] " + joinNonEmpty(" — ", i.ListReply.Title, i.ListReply.Description)
	case i.NFMReply != nil:
		body := i.NFMReply.Body
		if body == "" {
			body = i.NFMReply.ResponseJSON
		}
		return "[Form] " + body
	}
	return unsupported(m)
}

// renderReaction: `[Reaction] 👍 to "quoted text"`, or "[Reaction] removed".
func renderReaction(emoji, quoted string) string {
	if emoji == "" {
		return "[Reaction] removed"
	}
	if quoted == "" {
		return "[Reaction] " + emoji
	}
	return fmt.Sprintf("[Reaction] %s to %q", emoji, quoted)
}

// unsupported: "[Unsupported WhatsApp message: TYPE (error title)]".
func unsupported(m InMessage) string {
	s := "[Unsupported WhatsApp message: " + clip(m.Type, 32)
	if len(m.Errors) > 0 && m.Errors[0].Title != "" {
		s += " (" + clip(m.Errors[0].Title, 200) + ")"
	}
	return s + "]"
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

// validID reports whether s is usable as a provider id: non-empty, short,
// printable UTF-8 without spaces.
func validID(s string) bool {
	if s == "" || len(s) > maxIDLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func cleanWaID(s string) string {
	if waIDRe.MatchString(s) {
		return s
	}
	return ""
}

func cleanUserID(s string) string {
	if len(s) <= maxIDLen && bsuidRe.MatchString(s) && !waIDRe.MatchString(s) {
		return s
	}
	return ""
}

// isPhone reports whether an identity is a wa_id (a phone number) rather
// than a BSUID: the two are sent to through different fields.
func isPhone(externalID string) bool { return waIDRe.MatchString(externalID) }

func unixTime(s string) time.Time {
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec <= 0 || sec > 1<<40 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

// clip shortens s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
