package web

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
)

// Message frames are the hot path (one per committed message and audience),
// so they are encoded by hand, appending to one buffer, instead of through
// encoding/json's reflection. The output is byte for byte what
// encoding/json gives for the same structs (TestEncodeMatchesJSON), so the
// wire format stays the one documented.

func appendMessageFrame(b []byte, m *core.Message, c *core.Conversation, visitor bool, names agentNames) []byte {
	b = append(b, `{"type":"message","message":`...)
	if visitor {
		b = appendVisitorMessage(b, m, names)
	} else {
		b = appendAgentMessage(b, m)
	}
	if c != nil && !visitor {
		b = append(b, `,"conversation":`...)
		b = appendConversation(b, c)
	}
	return append(b, '}')
}

func appendAgentMessage(b []byte, m *core.Message) []byte {
	b = appendInt(b, `{"id":`, m.ID)
	b = appendInt(b, `,"conversation_id":`, m.ConversationID)
	b = appendInt(b, `,"seq":`, m.Seq)
	b = appendStr(b, `,"sender_kind":`, string(m.SenderKind))
	if m.SenderID != 0 {
		b = appendInt(b, `,"sender_id":`, m.SenderID)
	}
	b = appendStr(b, `,"visibility":`, string(m.Visibility))
	b = appendStr(b, `,"kind":`, string(m.Kind))
	if m.Text != "" {
		b = appendStr(b, `,"text":`, m.Text)
	}
	if md := m.Media; md != nil {
		b = appendStr(b, `,"media":{"key":`, md.Key)
		if md.Name != "" {
			b = appendStr(b, `,"name":`, md.Name)
		}
		b = appendStr(b, `,"type":`, md.Type)
		b = appendInt(b, `,"size":`, md.Size)
		if md.Preview != "" {
			b = appendStr(b, `,"preview":`, md.Preview)
		}
		b = append(b, '}')
	}
	if ev := m.Event; ev != nil {
		b = appendStr(b, `,"event":{"type":`, string(ev.Type))
		if ev.AgentID != 0 {
			b = appendInt(b, `,"agent_id":`, ev.AgentID)
		}
		if ev.FromID != 0 {
			b = appendInt(b, `,"from_id":`, ev.FromID)
		}
		if ev.ByID != 0 {
			b = appendInt(b, `,"by_id":`, ev.ByID)
		}
		b = append(b, '}')
	}
	b = appendStr(b, `,"status":`, string(m.Status))
	if m.FailReason != "" {
		b = appendStr(b, `,"fail_reason":`, m.FailReason)
	}
	if m.ExternalID != "" {
		b = appendStr(b, `,"external_id":`, m.ExternalID)
	}
	if m.ResendOf != 0 {
		b = appendInt(b, `,"resend_of":`, m.ResendOf)
	}
	b = appendTime(b, `,"created_at":`, m.CreatedAt)
	return append(b, '}')
}

func appendVisitorMessage(b []byte, m *core.Message, names agentNames) []byte {
	v := viewMessage(m, names)
	b = appendInt(b, `{"id":`, v.ID)
	b = appendInt(b, `,"conversation_id":`, v.ConversationID)
	b = appendInt(b, `,"seq":`, v.Seq)
	b = appendStr(b, `,"sender_kind":`, string(v.SenderKind))
	if v.SenderName != "" {
		b = appendStr(b, `,"sender_name":`, v.SenderName)
	}
	b = appendStr(b, `,"kind":`, string(v.Kind))
	if v.Text != "" {
		b = appendStr(b, `,"text":`, v.Text)
	}
	if md := v.Media; md != nil {
		b = appendStr(b, `,"media":{"key":`, md.Key)
		if md.Name != "" {
			b = appendStr(b, `,"name":`, md.Name)
		}
		b = appendStr(b, `,"type":`, md.Type)
		b = appendInt(b, `,"size":`, md.Size)
		b = append(b, '}')
	}
	if ev := v.Event; ev != nil {
		b = appendStr(b, `,"event":{"type":`, string(ev.Type))
		if ev.AgentName != "" {
			b = appendStr(b, `,"agent_name":`, ev.AgentName)
		}
		b = append(b, '}')
	}
	b = appendStr(b, `,"status":`, string(v.Status))
	b = appendTime(b, `,"created_at":`, v.CreatedAt)
	return append(b, '}')
}

func appendConversation(b []byte, c *core.Conversation) []byte {
	b = appendInt(b, `{"id":`, c.ID)
	b = appendInt(b, `,"contact_id":`, c.ContactID)
	b = appendStr(b, `,"channel":`, c.Channel)
	b = appendStr(b, `,"external_id":`, c.ExternalID)
	b = appendStr(b, `,"status":`, string(c.Status))
	if c.AssigneeID != 0 {
		b = appendInt(b, `,"assignee_id":`, c.AssigneeID)
	}
	b = appendInt(b, `,"last_seq":`, c.LastSeq)
	b = appendTime(b, `,"last_inbound_at":`, c.LastInboundAt)
	b = appendTime(b, `,"queued_at":`, c.QueuedAt)
	b = appendTime(b, `,"created_at":`, c.CreatedAt)
	b = appendTime(b, `,"updated_at":`, c.UpdatedAt)
	b = appendTime(b, `,"resolved_at":`, c.ResolvedAt)
	return append(b, '}')
}

func appendInt(b []byte, key string, n int64) []byte {
	return strconv.AppendInt(append(b, key...), n, 10)
}

func appendStr(b []byte, key, s string) []byte {
	return appendJSONString(append(b, key...), s)
}

// appendTime writes t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds). A year outside 0–9999, which MarshalJSON refuses, is
// written as the zero time.
func appendTime(b []byte, key string, t time.Time) []byte {
	b = append(b, key...)
	if y := t.Year(); y < 0 || y > 9999 {
		t = time.Time{}
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as encoding/json does: quotes, backslashes and
// control characters escaped, <, > and & escaped (HTML-safe), invalid UTF-8
// replaced by U+FFFD, and U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
