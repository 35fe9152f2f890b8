package core

import (
	"context"
	"math"
)

// Unread counts: how many messages a reader has not read, shown as the
// console's per-conversation count and as a push notification's badge.

// UnreadScan is how many of a conversation's newest entries an unread count
// looks at; it never counts more.
const UnreadScan = 100

// EndsUnread reports whether m ends the run of unread messages counted back
// from a conversation's newest. For agents (forContact false): an agent's
// reply to the customer, or a customer message agents have read; an
// automatic reply (a bot's offline or busy reply) answers nobody's
// question, so the customer's messages before it stay unread. For the
// customer: a message of their own, or a reply they have read. Events and
// notes do not end it.
func EndsUnread(m Message, forContact bool) bool {
	if forContact {
		if m.SenderKind == SenderContact {
			return true
		}
		return m.Outgoing() && m.Status == MsgRead
	}
	if m.SenderKind == SenderContact {
		return m.Status == MsgRead
	}
	return m.SenderKind == SenderAgent && m.Visibility == Public && m.Kind != KindEvent
}

// countsAsUnread reports whether m is one the reader would have to read.
func countsAsUnread(m Message, forContact bool) bool {
	if forContact {
		return m.Outgoing()
	}
	return m.SenderKind == SenderContact
}

// UnreadCounts counts, for each conversation, the reader's unread messages
// since the other side's last message (see EndsUnread), among its newest
// UnreadScan entries. last holds each conversation's newest message
// (Store.LastMessages); a conversation whose newest message already ends
// the run costs no read, so only conversations waiting for the reader cost
// one read each. Conversations with none are left out of the map.
func UnreadCounts(ctx context.Context, st Store, cs []Conversation, last map[int64]Message, forContact bool) (map[int64]int, error) {
	out := make(map[int64]int)
	for _, c := range cs {
		m, ok := last[c.ID]
		if !ok || EndsUnread(m, forContact) {
			continue
		}
		ms, err := st.Messages(ctx, MessageQuery{ConversationID: c.ID, BeforeSeq: math.MaxInt64, Limit: UnreadScan, PublicOnly: forContact})
		if err != nil {
			return nil, err
		}
		n := 0
		for i := len(ms) - 1; i >= 0 && !EndsUnread(ms[i], forContact); i-- {
			if countsAsUnread(ms[i], forContact) {
				n++
			}
		}
		if n > 0 {
			out[c.ID] = n
		}
	}
	return out, nil
}
