package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

// WhatsApp's limits on what it accepts from a business.
const (
	maxOutText    = 4096 // characters of a text message
	maxOutCaption = 1024 // characters of a media caption
	maxOutImage   = 5 << 20
	maxOutAV      = 16 << 20 // audio and video
	maxOutDoc     = 100 << 20
)

// Error codes of the Cloud API that kefu treats specially.
const (
	codeToken         = 190    // access token invalid or expired
	codeWindow        = 131047 // more than 24 hours since the customer last wrote
	codeUndeliverable = 131026 // the recipient cannot receive it
	codeThroughput    = 130429 // the number's messages-per-second limit
	codePairRate      = 131056 // too many messages to one customer in a short time
	codeAppRate       = 4      // the app's API call limit
	codeAccountRate   = 80007  // the WhatsApp Business Account's limit
)

// Waits for rate limits when Meta does not say how long.
const (
	waitThroughput = 2 * time.Second  // 80 messages/s by default: a burst passes quickly
	waitPairRate   = 6 * time.Second  // about one message every 6 s to one customer
	waitCallRate   = 60 * time.Second // app and account call limits
	waitHTTP429    = 5 * time.Second
	maxWait        = time.Hour
)

// Reasons agents see on a message that failed.
const (
	reasonWindow        = "the 24-hour window has closed: WhatsApp accepts only a template until the customer writes again (131047)"
	reasonUndeliverable = "undeliverable: WhatsApp could not deliver it; the number may not use WhatsApp or may not accept messages from businesses (131026)"
	reasonToken         = "the WhatsApp access token is invalid or expired (190): replace access_token and restart kefu"
)

// transientCodes are Cloud API errors worth retrying with backoff.
var transientCodes = map[int]bool{
	1:      true, // unknown API error
	2:      true, // API service temporarily unavailable
	131000: true, // something went wrong
	131016: true, // service unavailable
	131057: true, // account in maintenance mode
	133004: true, // server temporarily unavailable
}

// Send implements bridge.Sender: it sends one outgoing message (text, image,
// file or template) to the conversation's customer and returns its wamid.
func (c *Channel) Send(ctx context.Context, out bridge.Outgoing) (bridge.SendResult, error) {
	m, conv := out.Message, out.Conversation
	if m == nil || conv == nil {
		return bridge.SendResult{}, bridge.Permanent("nothing to deliver", errors.New("whatsapp: outbox entry without a message"))
	}
	// The core refuses replies outside the window, but one can wait in the
	// outbox (backoff, a rate limit) until the window closes: WhatsApp would
	// refuse it, so do not ask. (kefu's clock starts when it received the
	// customer's message, after WhatsApp's, so it never closes too early.)
	if m.Kind != core.KindTemplate && !conv.LastInboundAt.IsZero() && !c.now().Before(conv.LastInboundAt.Add(Window)) {
		return bridge.SendResult{}, bridge.Permanent(reasonWindow,
			fmt.Errorf("whatsapp: %w: the customer last wrote at %s", core.ErrWindowClosed, conv.LastInboundAt.UTC().Format(time.RFC3339)))
	}
	body := outMessage{MessagingProduct: "whatsapp", RecipientType: "individual"}
	if isPhone(conv.ExternalID) {
		body.To = conv.ExternalID
	} else {
		body.Recipient = conv.ExternalID
	}
	switch m.Kind {
	case core.KindText:
		if n := utf8.RuneCountInString(m.Text); n > maxOutText {
			return bridge.SendResult{}, bridge.Permanent(fmt.Sprintf("too long for WhatsApp: %d characters, at most %d", n, maxOutText), nil)
		}
		body.Type, body.Text = "text", &outText{Body: m.Text}
	case core.KindTemplate:
		t, ok := c.cfg.Templates[m.Text]
		if !ok {
			return bridge.SendResult{}, bridge.Permanent(fmt.Sprintf("no template %q is configured for this WhatsApp channel", m.Text), nil)
		}
		body.Type, body.Template = "template", t.wire()
	case core.KindImage, core.KindFile:
		if err := c.mediaBody(ctx, m, &body); err != nil {
			return bridge.SendResult{}, c.classify(err)
		}
	default:
		return bridge.SendResult{}, bridge.Permanent(fmt.Sprintf("WhatsApp cannot send a %s message", m.Kind), nil)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return bridge.SendResult{}, bridge.Permanent("cannot encode", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+c.cfg.PhoneNumberID+"/messages", bytes.NewReader(data))
	if err != nil {
		return bridge.SendResult{}, bridge.Permanent("bad api_base", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var ans sendAnswer
	if err := c.call(req, &ans); err != nil {
		return bridge.SendResult{}, c.classify(err)
	}
	var wamid string
	if len(ans.Messages) > 0 {
		wamid = ans.Messages[0].ID
	}
	if wamid == "" {
		c.log.Warn("whatsapp: message accepted without a wamid; its statuses will not be shown", "message", m.ID)
		return bridge.SendResult{}, nil
	}
	c.sent.put(wamid, m.ID)
	return bridge.SendResult{ExternalID: wamid}, nil
}

// wire is the template as the messages endpoint takes it.
func (t Template) wire() *outTemplate {
	out := &outTemplate{Name: t.Name, Language: outLanguage{Code: t.Language}}
	for _, comp := range t.Components {
		oc := outComponent{Type: comp.Type, SubType: comp.SubType}
		if comp.Type == "button" {
			oc.Index = strconv.Itoa(comp.Index)
		}
		for _, p := range comp.Parameters {
			op := outParameter{Type: p.Type, ParameterName: p.Name, Text: p.Text, Payload: p.Payload}
			switch p.Type {
			case "image":
				op.Image = &outLink{Link: p.Link}
			case "document":
				op.Document = &outLink{Link: p.Link}
			case "video":
				op.Video = &outLink{Link: p.Link}
			case "text":
				if strings.EqualFold(comp.SubType, "copy_code") {
					// A coupon's copy-code button takes its code so.
					op = outParameter{Type: "coupon_code", CouponCode: p.Text}
				}
			}
			oc.Parameters = append(oc.Parameters, op)
		}
		out.Components = append(out.Components, oc)
	}
	return out
}

// mediaBody uploads m's file to WhatsApp and fills body to send it.
//
// kefu uploads (POST /{phone_number_id}/media) rather than sending a link:
// a link would need kefu's media reachable from the internet without a
// login, at a URL Meta fetches whenever it likes, and would fail behind a
// private public_url. An upload needs nothing but the Graph API, and the
// returned media id is reused for a retry of the same file.
func (c *Channel) mediaBody(ctx context.Context, m *core.Message, body *outMessage) error {
	med := m.Media
	if med == nil || med.Key == "" {
		return bridge.Permanent("the attachment is missing", errors.New("whatsapp: media message without media"))
	}
	if n := utf8.RuneCountInString(m.Text); n > maxOutCaption {
		return bridge.Permanent(fmt.Sprintf("caption too long for WhatsApp: %d characters, at most %d", n, maxOutCaption), nil)
	}
	typ := outMediaType(med.Type, med.Size, m.Text != "")
	if typ == "document" && med.Size > maxOutDoc {
		return bridge.Permanent("the file is over WhatsApp's 100 MB limit", nil)
	}
	id, err := c.upload(ctx, *med)
	if err != nil {
		return err
	}
	om := &outMedia{ID: id, Caption: m.Text}
	body.Type = typ
	switch typ {
	case "image":
		body.Image = om
	case "video":
		body.Video = om
	case "audio":
		om.Caption = ""
		body.Audio = om
	default:
		om.Filename = med.Name
		if om.Filename == "" {
			om.Filename = "file"
		}
		body.Document = om
	}
	return nil
}

// outMediaType is how WhatsApp is to show a file: as an image, video or
// audio when it takes that type at that size, else as a document.
func outMediaType(typ string, size int64, captioned bool) string {
	switch typ {
	case "image/jpeg", "image/png":
		if size <= maxOutImage {
			return "image"
		}
	case "video/mp4", "video/3gpp":
		if size <= maxOutAV {
			return "video"
		}
	case "audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg":
		if size <= maxOutAV && !captioned { // audio takes no caption
			return "audio"
		}
	}
	return "document"
}

// upload sends a stored file to POST /{phone_number_id}/media and returns
// WhatsApp's media id for it.
func (c *Channel) upload(ctx context.Context, med core.Media) (string, error) {
	if id, ok := c.uploads.get(med.Key); ok {
		return id, nil
	}
	rc, size, err := c.media.Open(ctx, med.Key)
	if errors.Is(err, core.ErrNotFound) || errors.Is(err, core.ErrInvalid) {
		return "", bridge.Permanent("the attachment is no longer in kefu's media storage", err)
	}
	if err != nil {
		return "", fmt.Errorf("whatsapp: open media: %w", err)
	}
	defer rc.Close()

	// The multipart envelope is built around the file so that the request
	// has a Content-Length and the file is streamed, not held in memory.
	var env bytes.Buffer
	mw := multipart.NewWriter(&env)
	_ = mw.WriteField("messaging_product", "whatsapp")
	_ = mw.WriteField("type", med.Type)
	h := textproto.MIMEHeader{}
	name := med.Name
	if name == "" {
		name = "file"
	}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, strings.ToValidUTF8(name, "_")))
	h.Set("Content-Type", med.Type)
	if _, err := mw.CreatePart(h); err != nil {
		return "", bridge.Permanent("cannot encode the upload", err)
	}
	head := bytes.Clone(env.Bytes())
	env.Reset()
	_ = mw.Close()
	tail := env.Bytes()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+c.cfg.PhoneNumberID+"/media",
		io.MultiReader(bytes.NewReader(head), io.LimitReader(rc, size), bytes.NewReader(tail)))
	if err != nil {
		return "", bridge.Permanent("bad api_base", err)
	}
	req.ContentLength = int64(len(head)) + size + int64(len(tail))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var ans idAnswer
	if err := c.callWith(c.uploader, req, &ans); err != nil {
		return "", err
	}
	if ans.ID == "" {
		return "", errors.New("whatsapp: media upload answered without an id")
	}
	c.uploads.put(med.Key, ans.ID)
	return ans.ID, nil
}

// graphError is an error answer of the Graph API.
type graphError struct {
	HTTPStatus int
	Code       int
	Subcode    int
	Message    string
	Details    string
	// RetryAfter is how long Meta asks to wait (Retry-After, or the
	// estimated_time_to_regain_access of X-Business-Use-Case-Usage); 0 if
	// it does not say.
	RetryAfter time.Duration
}

func (e *graphError) Error() string {
	s := fmt.Sprintf("whatsapp: Graph API HTTP %d", e.HTTPStatus)
	if e.Code != 0 {
		s += fmt.Sprintf(" (#%d)", e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Details != "" && e.Details != e.Message {
		s += ": " + e.Details
	}
	return s
}

// call sends a Graph API request with the access token and decodes a 2xx
// answer into out (when not nil). Other answers are *graphError. An answer
// with error 190 marks the channel unhealthy; any 2xx marks it healthy.
func (c *Channel) call(req *http.Request, out any) error { return c.callWith(c.client, req, out) }

// callWith is call through client.
func (c *Channel) callWith(client *http.Client, req *http.Request, out any) error {
	req.Header.Set("Authorization", "Bearer "+c.cfg.AccessToken)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named below, without its query
		}
		return fmt.Errorf("whatsapp: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("whatsapp: %s %s: reading the answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 == 2 {
		c.setHealth("")
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("whatsapp: %s %s: unreadable answer: %w", req.Method, req.URL.Path, err)
		}
		return nil
	}
	ge := &graphError{HTTPStatus: resp.StatusCode, RetryAfter: retryAfter(resp.Header)}
	var eb graphErrorBody
	if json.Unmarshal(data, &eb) == nil {
		ge.Code, ge.Subcode, ge.Message = eb.Error.Code, eb.Error.ErrorSubcode, eb.Error.Message
		if eb.Error.ErrorData != nil {
			ge.Details = eb.Error.ErrorData.Details
		}
	}
	if ge.Message == "" {
		ge.Message = clip(strings.TrimSpace(string(data)), 200)
	}
	if ge.Code == codeToken {
		c.setHealth(reasonToken + ": " + clip(ge.Message, 200))
	}
	return ge
}

// classify turns a failed send into what the Deliverer should do with it.
func (c *Channel) classify(err error) error {
	var ge *graphError
	if !errors.As(err, &ge) {
		return err // bridge errors pass through; transport errors are transient
	}
	wait := func(d time.Duration) error {
		return bridge.RetryAfter(min(max(ge.RetryAfter, d), maxWait), err)
	}
	switch {
	case ge.Code == codeToken:
		return bridge.Permanent(reasonToken, err)
	case ge.Code == codeWindow:
		return bridge.Permanent(reasonWindow, fmt.Errorf("%w: %w", core.ErrWindowClosed, err))
	case ge.Code == codeUndeliverable:
		return bridge.Permanent(reasonUndeliverable, err)
	case ge.Code == codeThroughput:
		return wait(waitThroughput)
	case ge.Code == codePairRate:
		return wait(waitPairRate)
	case ge.Code == codeAppRate || ge.Code == codeAccountRate:
		return wait(waitCallRate)
	case ge.HTTPStatus == http.StatusTooManyRequests:
		return wait(waitHTTP429)
	case ge.HTTPStatus >= 500 || transientCodes[ge.Code] ||
		ge.HTTPStatus == http.StatusRequestTimeout:
		return err
	}
	return bridge.Permanent(refusal(ge.Code, ge.Message, ge.Details), err)
}

// refusal is the reason shown for an error kefu has no words of its own for.
func refusal(code int, msg, details string) string {
	s := "WhatsApp refused the message"
	if code != 0 {
		s += fmt.Sprintf(" (%d)", code)
	}
	if details == msg {
		details = ""
	}
	if msg = joinNonEmpty(": ", msg, details); msg != "" {
		s += ": " + clip(msg, 300)
	}
	return s
}

// statusReason is the reason shown for a "failed" status.
func statusReason(errs []EventError) string {
	if len(errs) == 0 {
		return "WhatsApp reported the message failed, without a reason"
	}
	e := errs[0]
	switch e.Code {
	case codeWindow:
		return reasonWindow
	case codeUndeliverable:
		return reasonUndeliverable
	case codeToken:
		return reasonToken
	}
	title := e.Title
	if title == "" {
		title = e.Message
	}
	return refusal(e.Code, title, detailsOf(e))
}

// retryAfter reads how long Meta asks to wait: Retry-After (seconds), or
// the largest estimated_time_to_regain_access (minutes) in
// X-Business-Use-Case-Usage. 0 when neither says.
func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	var usage map[string][]struct {
		ETA int `json:"estimated_time_to_regain_access"`
	}
	if v := h.Get("X-Business-Use-Case-Usage"); v != "" && json.Unmarshal([]byte(v), &usage) == nil {
		var most int
		for _, us := range usage {
			for _, u := range us {
				most = max(most, u.ETA)
			}
		}
		return time.Duration(most) * time.Minute
	}
	return 0
}
