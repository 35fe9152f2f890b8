package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
)

// The wire protocol's frames: JSON text frames, the same over WebSocket and
// long polling. docs/protocol.md is their reference; keep the two in step.

// Frame types, client → server.
const (
	frameHello   = "hello"   // WebSocket only, first frame: token and resume cursor
	frameSend    = "send"    // a message, with a client-generated id
	frameReceipt = "receipt" // delivered / read up to a sequence number
	frameTyping  = "typing"  // typing indicator
	framePing    = "ping"    // either side may ping; the other answers pong
	framePong    = "pong"
)

// Frame types, server → client.
const (
	frameWelcome      = "welcome"      // answer to hello
	frameSynced       = "synced"       // replay done; carries the cursor
	frameAck          = "ack"          // a send is committed
	frameMessage      = "message"      // a message or event of a conversation
	frameStatus       = "status"       // a message's delivery status moved
	frameConversation = "conversation" // a conversation changed (agents)
	frameError        = "error"
)

// Error codes of error frames (and, where they apply, of HTTP error bodies).
// The httpx codes keep their meaning; the rest are the protocol's own.
const (
	codeBadFrame       = "bad_frame"      // not a JSON object, a field of the wrong type, a missing field
	codeUnknownType    = "unknown_type"   // a frame type this server does not know
	codeHelloRequired  = "hello_required" // the first WebSocket frame must be hello
	codeTooLarge       = httpx.CodeTooLarge
	codeUnauthorized   = httpx.CodeUnauthorized
	codeForbidden      = httpx.CodeForbidden
	codeNotFound       = httpx.CodeNotFound
	codeBadRequest     = httpx.CodeBadRequest
	codeRateLimited    = httpx.CodeRateLimited
	codeUnavailable    = httpx.CodeUnavailable
	codeInternal       = httpx.CodeInternal
	codeSlowConsumer   = "slow_consumer"   // close reason only
	codePingTimeout    = "ping_timeout"    // close reason only
	codeSessionExpired = "session_expired" // close reason only
)

// WebSocket close codes kefu uses (4000–4999 are for applications).
const (
	closeNormal       = 1000
	closeGoingAway    = 1001 // the server is shutting down: reconnect (elsewhere)
	closeTooBig       = 1009 // a frame over max_frame_bytes (sent by gorilla)
	closeProtocol     = 4000 // no hello first, or hello not in time
	closeUnauthorized = 4001 // bad, expired or revoked token; an agent session ended
	closePingTimeout  = 4002 // silent for two ping intervals
	closeNotFound     = 4004 // hello named a conversation that is not the visitor's
	closeSlowConsumer = 4008 // the send queue overflowed: reconnect and resume
)

// maxTextBytes bounds a message's text, as the other channels do.
const maxTextBytes = 16 << 10

// maxClientID bounds a send frame's client id.
const maxClientID = 64

// inFrame is any client frame. Which fields apply depends on Type; fields
// that do not apply are ignored, and so are unknown fields (a newer client
// talking to an older server).
type inFrame struct {
	Type string `json:"type"`
	// hello
	Token   string `json:"token,omitempty"`
	LastSeq int64  `json:"last_seq,omitempty"` // visitor resume: last seq seen in ConversationID
	Cursor  *int64 `json:"cursor,omitempty"`   // agent resume: last message id seen
	// send, receipt, typing
	ID             string `json:"id,omitempty"` // send: the client's id for the message
	ConversationID int64  `json:"conversation_id,omitempty"`
	Text           string `json:"text,omitempty"`
	Note           bool   `json:"note,omitempty"`   // send (agents): an internal note
	Seq            int64  `json:"seq,omitempty"`    // receipt: up to this sequence number
	Status         string `json:"status,omitempty"` // receipt: delivered | read
	On             bool   `json:"on,omitempty"`     // typing
	// send: an image or a file (Text is then an optional caption)
	Kind  string    `json:"kind,omitempty"`  // text (the default), image, file
	Media *mediaRef `json:"media,omitempty"` // image, file: the uploaded file
}

// mediaRef names an uploaded file in a send frame. The server takes the
// file's type, size and preview from its own record of the upload.
type mediaRef struct {
	Key  string `json:"key"`            // the key the upload answered with
	Name string `json:"name,omitempty"` // a file name to show instead of the uploaded one
}

// maxMediaName bounds a send frame's media name (media.SanitizeName keeps
// at most 255 bytes of it).
const maxMediaName = 1024

// protoError is an error the protocol reports to a client: an error frame
// with Code, and for a WebSocket, when Close is set, the connection closed
// with that code afterwards.
type protoError struct {
	Code       string
	Msg        string
	ID         string        // the client id of the send it answers, if any
	RetryAfter time.Duration // rate_limited: when to try again
	Close      int           // WebSocket close code; 0: the connection stays
}

func (e *protoError) Error() string { return e.Code + ": " + e.Msg }

func badFrame(format string, args ...any) *protoError {
	return &protoError{Code: codeBadFrame, Msg: fmt.Sprintf(format, args...)}
}

// decodeFrame reads one client frame and checks the fields its type needs.
// It never panics, whatever data holds.
func decodeFrame(data []byte) (inFrame, *protoError) {
	var f inFrame
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return f, badFrame("a frame is a JSON object")
	}
	// Unmarshal checks the whole input: data after the object is an error.
	if err := json.Unmarshal(data, &f); err != nil {
		e := badFrame("malformed JSON: %s", jsonProblem(err))
		e.ID = sendID(data) // so that the client can tell which send failed
		return inFrame{}, e
	}
	// Unmarshal turns invalid UTF-8 into U+FFFD: refused, not altered.
	if !utf8.Valid(data) {
		return inFrame{}, &protoError{Code: codeBadRequest, Msg: "the frame is not valid UTF-8", ID: sendID(data)}
	}
	if err := f.validate(); err != nil {
		return inFrame{}, err
	}
	return f, nil
}

// sendID returns the id of a send frame that failed to decode, when its
// type and id can still be read, or "".
func sendID(data []byte) string {
	var f struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	// A field of the wrong type elsewhere leaves these two read; broken
	// JSON leaves them empty.
	_ = json.Unmarshal(data, &f)
	if f.Type != frameSend {
		return ""
	}
	return f.ID
}

// isFrameType reports whether data is exactly {"type":"TYP"}, give or
// take JSON whitespace: the cheap path for pings and pongs.
func isFrameType(data []byte, typ string) bool {
	i := 0
	skip := func() {
		for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
			i++
		}
	}
	lit := func(s string) bool {
		skip()
		if len(data)-i < len(s) || string(data[i:i+len(s)]) != s {
			return false
		}
		i += len(s)
		return true
	}
	ok := lit("{") && lit(`"type"`) && lit(":") && lit(`"`+typ+`"`) && lit("}")
	skip()
	return ok && i == len(data)
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("%s must be %s, not %s", te.Field, jsonType(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("expected %s, got %s", te.Type, te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected end of input"
	}
	return "invalid JSON"
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "ptr", "int64", "int", "float64":
		return "a number"
	}
	return kind
}

func (f *inFrame) validate() *protoError {
	switch f.Type {
	case frameHello:
		if len(f.Token) > maxHelloToken {
			return badFrame("token too long")
		}
		if f.ConversationID < 0 || f.LastSeq < 0 || (f.Cursor != nil && *f.Cursor < 0) {
			return badFrame("conversation_id, last_seq and cursor cannot be negative")
		}
	case frameSend:
		if err := checkClientID(f.ID); err != nil {
			return err
		}
		switch core.ContentKind(f.Kind) {
		case "", core.KindText:
			if f.Media != nil {
				return &protoError{Code: codeBadFrame, Msg: "media needs kind image or file", ID: f.ID}
			}
			if strings.TrimSpace(f.Text) == "" {
				return &protoError{Code: codeBadRequest, Msg: "text is empty", ID: f.ID}
			}
		case core.KindImage, core.KindFile:
			if f.Media == nil || media.CheckKey(f.Media.Key) != nil {
				return &protoError{Code: codeBadFrame, Msg: f.Kind + " needs media.key, the key of an uploaded file", ID: f.ID}
			}
			if len(f.Media.Name) > maxMediaName {
				return &protoError{Code: codeBadFrame, Msg: fmt.Sprintf("media.name over %d bytes", maxMediaName), ID: f.ID}
			}
		default:
			return &protoError{Code: codeBadFrame, Msg: "kind must be text, image or file", ID: f.ID}
		}
		if len(f.Text) > maxTextBytes {
			return &protoError{Code: codeTooLarge, Msg: fmt.Sprintf("text over %d bytes", maxTextBytes), ID: f.ID}
		}
		if !utf8.ValidString(f.Text) {
			return &protoError{Code: codeBadRequest, Msg: "text is not valid UTF-8", ID: f.ID}
		}
		if f.ConversationID < 0 {
			return &protoError{Code: codeBadFrame, Msg: "conversation_id cannot be negative", ID: f.ID}
		}
	case frameReceipt:
		if f.ConversationID <= 0 || f.Seq <= 0 {
			return badFrame("receipt needs conversation_id and seq")
		}
		if f.Status != string(core.MsgDelivered) && f.Status != string(core.MsgRead) {
			return badFrame("receipt status must be delivered or read")
		}
	case frameTyping:
		if f.ConversationID < 0 {
			return badFrame("conversation_id cannot be negative")
		}
	case framePing, framePong:
	case "":
		return badFrame("frame without type")
	default:
		return &protoError{Code: codeUnknownType, Msg: fmt.Sprintf("unknown frame type %q", truncate(f.Type, 32))}
	}
	return nil
}

// checkClientID accepts 1–64 characters of A–Z a–z 0–9 . _ ~ - (a UUID
// fits). Keeping ':' out makes core.ClientKey unambiguous.
func checkClientID(id string) *protoError {
	if id == "" || len(id) > maxClientID {
		return badFrame("send needs an id of 1 to %d characters", maxClientID)
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '~' || b == '-') {
			return badFrame("id may hold only letters, digits and . _ ~ -")
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// frame is one encoded server frame, shared by every connection it goes to
// (encode once per update and audience). Never modified after creation.
type frame struct {
	data []byte
	// For message frames (msg true): what the per-connection cursor filter
	// needs to drop what a client already has.
	msg  bool
	conv int64
	seq  int64
	id   int64
}

// Static frames.
var (
	pingFrame = &frame{data: []byte(`{"type":"ping"}`)}
	pongFrame = &frame{data: []byte(`{"type":"pong"}`)}
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own structs are encoded here; they always marshal.
		panic(fmt.Sprintf("web: encode frame: %v", err))
	}
	return b
}

// Views: what each audience is shown of a message.

// visitorMessage is a message as a visitor sees it: no internal ids.
type visitorMessage struct {
	ID             int64              `json:"id"`
	ConversationID int64              `json:"conversation_id"`
	Seq            int64              `json:"seq"`
	SenderKind     core.SenderKind    `json:"sender_kind"`
	SenderName     string             `json:"sender_name,omitempty"`
	Kind           core.ContentKind   `json:"kind"`
	Text           string             `json:"text,omitempty"`
	Media          *visitorMedia      `json:"media,omitempty"`
	Event          *visitorEvent      `json:"event,omitempty"`
	Status         core.MessageStatus `json:"status"`
	CreatedAt      time.Time          `json:"created_at"`
}

type visitorMedia struct {
	Key  string `json:"key"`
	Name string `json:"name,omitempty"`
	Type string `json:"type"`
	Size int64  `json:"size"`
}

type visitorEvent struct {
	Type      core.EventType `json:"type"`
	AgentName string         `json:"agent_name,omitempty"`
}

// visitorConversation is a conversation as a visitor sees it.
type visitorConversation struct {
	ID        int64                   `json:"id"`
	Status    core.ConversationStatus `json:"status"`
	LastSeq   int64                   `json:"last_seq"`
	CreatedAt time.Time               `json:"created_at"`
}

func viewConversation(c core.Conversation) *visitorConversation {
	return &visitorConversation{ID: c.ID, Status: c.Status, LastSeq: c.LastSeq, CreatedAt: c.CreatedAt}
}

// agentNames resolves agent ids to display names for visitor views.
type agentNames func(id int64) string

func viewMessage(m *core.Message, names agentNames) visitorMessage {
	v := visitorMessage{
		ID: m.ID, ConversationID: m.ConversationID, Seq: m.Seq, SenderKind: m.SenderKind,
		Kind: m.Kind, Text: m.Text, Status: m.Status, CreatedAt: m.CreatedAt,
	}
	if m.SenderKind == core.SenderAgent && m.SenderID != 0 && names != nil {
		v.SenderName = names(m.SenderID)
	}
	if m.Media != nil {
		v.Media = &visitorMedia{Key: m.Media.Key, Name: m.Media.Name, Type: m.Media.Type, Size: m.Media.Size}
	}
	if m.Event != nil {
		v.Event = &visitorEvent{Type: m.Event.Type}
		if m.Event.AgentID != 0 && names != nil {
			v.Event.AgentName = names(m.Event.AgentID)
		}
	}
	return v
}

// Server frames as structs.

type messageOut struct {
	Type         string             `json:"type"`
	Message      any                `json:"message"`
	Conversation *core.Conversation `json:"conversation,omitempty"` // agents: the conversation after it
}

type ackOut struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Message   any    `json:"message"`
	Duplicate bool   `json:"duplicate"`
}

type errorOut struct {
	Type  string      `json:"type"`
	ID    string      `json:"id,omitempty"` // the send it answers
	Error errorDetail `json:"error"`
}

// errorDetail has the shape of the HTTP error body's "error" object.
type errorDetail struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

type receiptOut struct {
	Type           string             `json:"type"`
	ConversationID int64              `json:"conversation_id"`
	Seq            int64              `json:"seq"`
	Status         core.MessageStatus `json:"status"`
	By             string             `json:"by"` // contact | agent
}

type typingOut struct {
	Type           string          `json:"type"`
	ConversationID int64           `json:"conversation_id"`
	SenderKind     core.SenderKind `json:"sender_kind"`
	SenderID       int64           `json:"sender_id,omitempty"` // agents only
	SenderName     string          `json:"sender_name,omitempty"`
	On             bool            `json:"on"`
}

type statusOut struct {
	Type           string             `json:"type"`
	MessageID      int64              `json:"message_id"`
	ConversationID int64              `json:"conversation_id"`
	Seq            int64              `json:"seq"`
	Status         core.MessageStatus `json:"status"`
	FailReason     string             `json:"fail_reason,omitempty"` // agents only
}

type conversationOut struct {
	Type         string             `json:"type"`
	Conversation *core.Conversation `json:"conversation"`
}

type welcomeOut struct {
	Type           string       `json:"type"`
	Visitor        *visitorInfo `json:"visitor,omitempty"`
	Agent          *agentInfo   `json:"agent,omitempty"`
	PingIntervalMS int64        `json:"ping_interval_ms"`
	MaxFrameBytes  int64        `json:"max_frame_bytes"`
}

type visitorInfo struct {
	ID       string `json:"id"`
	Verified bool   `json:"verified"`
	Name     string `json:"name,omitempty"`
}

type agentInfo struct {
	ID    int64     `json:"id"`
	Email string    `json:"email"`
	Name  string    `json:"name"`
	Role  core.Role `json:"role"`
}

// cursorOut is the resume position, in synced frames and long-poll answers:
// a visitor's newest conversation and its last sequence number, or an
// agent's message id.
type cursorOut struct {
	ConversationID *int64 `json:"conversation_id,omitempty"`
	LastSeq        *int64 `json:"last_seq,omitempty"`
	Cursor         *int64 `json:"cursor,omitempty"`
}

type syncedOut struct {
	Type string `json:"type"`
	cursorOut
}

// Frame builders.

func visitorMessageFrame(m *core.Message, names agentNames) *frame {
	b := make([]byte, 0, 256+len(m.Text))
	return &frame{
		data: appendMessageFrame(b, m, nil, true, names),
		msg:  true, conv: m.ConversationID, seq: m.Seq, id: m.ID,
	}
}

func agentMessageFrame(m *core.Message, c *core.Conversation) *frame {
	b := make([]byte, 0, 640+len(m.Text)+len(m.FailReason))
	return &frame{
		data: appendMessageFrame(b, m, c, false, nil),
		msg:  true, conv: m.ConversationID, seq: m.Seq, id: m.ID,
	}
}

func ackFrame(id string, msg any, dup bool) *frame {
	return &frame{data: mustJSON(ackOut{Type: frameAck, ID: id, Message: msg, Duplicate: dup})}
}

func errorFrame(e *protoError) *frame {
	out := errorOut{Type: frameError, ID: e.ID, Error: errorDetail{Code: e.Code, Message: e.Msg}}
	if e.RetryAfter > 0 {
		out.Error.RetryAfterMS = max(1, e.RetryAfter.Milliseconds())
	}
	return &frame{data: mustJSON(out)}
}

func receiptFrame(r *core.Receipt) *frame {
	by := "agent"
	if r.ByContact {
		by = "contact"
	}
	return &frame{data: mustJSON(receiptOut{Type: frameReceipt, ConversationID: r.ConversationID, Seq: r.UpToSeq, Status: r.Status, By: by})}
}

func typingFrame(t *core.Typing, forAgents bool, names agentNames) *frame {
	out := typingOut{Type: frameTyping, ConversationID: t.ConversationID, SenderKind: t.SenderKind, On: t.On}
	if forAgents {
		out.SenderID = t.SenderID
	}
	if t.SenderKind == core.SenderAgent && t.SenderID != 0 && names != nil {
		out.SenderName = names(t.SenderID)
	}
	return &frame{data: mustJSON(out)}
}

func statusFrame(m *core.Message, forAgents bool) *frame {
	out := statusOut{Type: frameStatus, MessageID: m.ID, ConversationID: m.ConversationID, Seq: m.Seq, Status: m.Status}
	if forAgents {
		out.FailReason = m.FailReason
	}
	return &frame{data: mustJSON(out)}
}

func conversationFrame(c *core.Conversation) *frame {
	return &frame{data: mustJSON(conversationOut{Type: frameConversation, Conversation: c})}
}

func visitorCursor(conv, seq int64) cursorOut {
	return cursorOut{ConversationID: &conv, LastSeq: &seq}
}

func agentCursor(id int64) cursorOut { return cursorOut{Cursor: &id} }

func syncedFrame(c cursorOut) *frame {
	return &frame{data: mustJSON(syncedOut{Type: frameSynced, cursorOut: c})}
}

// toProtoError turns an error from the core or the store into what the
// client is told. Internal errors are logged, and the client gets a generic
// message.
func toProtoError(err error, id string, log *slog.Logger) *protoError {
	var pe *protoError
	if errors.As(err, &pe) {
		if pe.ID == "" {
			pe.ID = id
		}
		return pe
	}
	status, code := httpx.Status(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		if log != nil {
			log.Error("frame failed", "err", err)
		}
		msg = "internal error"
	}
	return &protoError{Code: code, Msg: msg, ID: id}
}
