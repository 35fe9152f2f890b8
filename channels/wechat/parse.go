package wechat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/silenceper/wechat/v2/officialaccount/message"

	"github.com/kefuhq/kefu/core"
)

// Limits on callback fields.
const (
	maxIDLen   = 128      // openids, media ids, event keys
	maxTextLen = 16 << 10 // a text message (WeChat's own limit is lower)
)

// Envelope is the outer XML of a callback in compatible and safe mode: the
// account's original id and the encrypted message.
type Envelope struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName string   `xml:"ToUserName"`
	Encrypt    string   `xml:"Encrypt"`
}

// ParseEnvelope reads the outer XML of an encrypted callback.
func ParseEnvelope(b []byte) (Envelope, error) {
	var env Envelope
	if err := xml.Unmarshal(b, &env); err != nil {
		return env, fmt.Errorf("malformed callback XML: %w", err)
	}
	if env.Encrypt == "" {
		return env, errors.New("callback has no Encrypt element")
	}
	return env, nil
}

// ParseMessage reads a callback's (decrypted) message XML, as the library's
// message.MixMessage, and checks the fields kefu relies on.
func ParseMessage(b []byte) (*message.MixMessage, error) {
	var m message.MixMessage
	if err := xml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("malformed message XML: %w", err)
	}
	from := string(m.FromUserName)
	switch {
	case from == "" || len(from) > maxIDLen || !printableASCII(from):
		return nil, errors.New("FromUserName: missing or not an openid")
	case m.MsgType == "":
		return nil, errors.New("MsgType: missing")
	case m.CreateTime < 0:
		return nil, errors.New("CreateTime: negative")
	}
	return &m, nil
}

// inbound is what kefu makes of one callback: the message to store, and
// the media to fetch for it first. It is also the payload of a media job
// (JSON), so its fields are exported to encoding/json only through tags.
type inbound struct {
	OpenID string `json:"openid"`
	// ID identifies the callback across WeChat's retries: "msg:MSGID", or
	// "evt:FROM:CREATETIME:EVENT" for events.
	ID   string           `json:"id"`
	Kind core.ContentKind `json:"kind"`
	Text string           `json:"text,omitempty"`
	// MediaID, when set, is fetched through the media API into Media.
	MediaID   string `json:"media_id,omitempty"`
	MediaName string `json:"media_name,omitempty"`
	// PicURL is an image's direct URL, tried when the media API fails.
	PicURL string `json:"pic_url,omitempty"`
	// Fallback is stored as text when the media cannot be kept.
	Fallback string `json:"fallback,omitempty"`
	// OnlyIfActive: store it only into a conversation that is waiting or
	// open (an unfollow should not start a conversation).
	OnlyIfActive bool `json:"only_if_active,omitempty"`
	// KeepsWindow: it does not open or extend WeChat's 48-hour window (an
	// unfollow: WeChat refuses messages to someone who unfollowed).
	KeepsWindow bool `json:"keeps_window,omitempty"`
	// Welcome: the customer followed the account.
	Welcome bool `json:"welcome,omitempty"`
}

// toInbound maps a callback to what kefu stores. ok is false for callbacks
// kefu ignores (template and mass-send reports, location reports, menu
// links, empty texts): they are answered "success" and stored nowhere.
func toInbound(m *message.MixMessage) (in inbound, ok bool) {
	in.OpenID = string(m.FromUserName)
	in.ID = "msg:" + strconv.FormatInt(m.MsgID, 10)
	if m.MsgID == 0 {
		in.ID = eventID(m)
	}
	in.Kind = core.KindText
	switch m.MsgType {
	case message.MsgTypeText:
		in.Text = clean(m.Content, maxTextLen)
		if strings.TrimSpace(in.Text) == "" {
			return in, false
		}
	case message.MsgTypeImage:
		in.Kind, in.MediaID, in.PicURL = core.KindImage, cleanID(m.MediaID), cleanURL(m.PicURL)
		in.Fallback = "[image]"
		if in.MediaID == "" && in.PicURL == "" {
			return in, false
		}
	case message.MsgTypeVoice:
		in.Kind, in.MediaID = core.KindFile, cleanID(m.MediaID)
		in.MediaName = "voice." + cleanExt(m.Format, "amr")
		in.Text = clean(m.Recognition, maxTextLen)
		in.Fallback = strings.TrimSpace("[voice] " + in.Text)
		if in.MediaID == "" {
			in.Kind, in.Text = core.KindText, in.Fallback
		}
	case message.MsgTypeVideo, message.MsgTypeShortVideo:
		in.Kind, in.MediaID, in.MediaName = core.KindFile, cleanID(m.MediaID), "video.mp4"
		in.Fallback = "[video]"
		if in.MediaID == "" {
			in.Kind, in.Text = core.KindText, in.Fallback
		}
	case message.MsgTypeLocation:
		in.Text = strings.TrimSpace(fmt.Sprintf("[location] %s (%s, %s)", clean(m.Label, 512), coord(m.LocationX), coord(m.LocationY)))
	case message.MsgTypeLink:
		in.Text = strings.TrimSpace("[link] " + clean(m.Title, 512) + "\n" + clean(m.Description, 2048) + "\n" + clean(m.URL, 2048))
	case message.MsgTypeEvent:
		return eventInbound(m, in)
	default:
		in.Text = "[unsupported WeChat message: " + clean(string(m.MsgType), 64) + "]"
	}
	return in, true
}

// eventID is an event's dedup key. WeChat gives events no MsgId and
// recommends FromUserName + CreateTime, but CreateTime is in seconds: two
// menu clicks in one second would be one. The event's key and scan result
// (a retry repeats them) tell them apart.
func eventID(m *message.MixMessage) string {
	id := fmt.Sprintf("evt:%s:%d:%s", m.FromUserName, m.CreateTime, clean(string(m.MsgType)+"/"+string(m.Event), maxIDLen))
	if m.EventKey == "" && m.ScanCodeInfo.ScanResult == "" {
		return id
	}
	sum := sha256.Sum256([]byte(m.EventKey + "\x00" + m.ScanCodeInfo.ScanResult))
	return id + ":" + hex.EncodeToString(sum[:8])
}

// eventInbound maps the events that open WeChat's 48-hour window (follow,
// a click or scan menu, a QR scan) and an unfollow; others are ignored. A menu
// link (VIEW) and a location report do not open the window, so storing
// them would make kefu believe it may write when WeChat will refuse.
func eventInbound(m *message.MixMessage, in inbound) (inbound, bool) {
	key := clean(m.EventKey, 512)
	switch m.Event {
	case message.EventSubscribe:
		in.Text = "[followed the Official Account]"
		if scene, ok := strings.CutPrefix(key, "qrscene_"); ok {
			in.Text = "[followed the Official Account by scanning QR code " + scene + "]"
		}
		in.Welcome = true
	case message.EventUnsubscribe:
		in.Text, in.OnlyIfActive, in.KeepsWindow = "[unfollowed the Official Account]", true, true
	case message.EventClick:
		in.Text = "[menu] " + key
	case message.EventScancodePush, message.EventScancodeWaitmsg:
		in.Text = strings.TrimSpace("[menu] " + key + " " + clean(m.ScanCodeInfo.ScanResult, 512))
	case message.EventScan:
		in.Text = "[scanned QR code " + key + "]"
	default:
		return in, false
	}
	return in, true
}

// clean makes provider text safe to store: valid UTF-8, without NULs, at
// most n bytes (cut at a rune boundary).
func clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// cleanID returns a provider id, or "" when it is not a plausible one.
func cleanID(s string) string {
	if s == "" || len(s) > maxIDLen || !printableASCII(s) {
		return ""
	}
	return s
}

// cleanURL returns an image URL on WeChat's image hosts, or "". kefu
// fetches it when the media API has no file, so it must not point anywhere
// else: in plaintext mode WeChat's signature does not cover the body.
func cleanURL(s string) string {
	if len(s) > 2048 || !printableASCII(s) {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Port() != "" {
		return ""
	}
	host := strings.ToLower(u.Hostname())
	for _, suffix := range []string{".qpic.cn", ".qlogo.cn"} {
		if strings.HasSuffix(host, suffix) {
			return s
		}
	}
	return ""
}

func cleanExt(s, def string) string {
	s = strings.ToLower(s)
	if s == "" || len(s) > 8 {
		return def
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return def
		}
	}
	return s
}

func coord(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "?"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
