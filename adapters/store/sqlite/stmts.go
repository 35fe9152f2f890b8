package sqlite

import (
	"fmt"
	"strings"

	"github.com/kefuhq/kefu/core"
)

// Column lists, in the order the scan functions in rows.go read them. Every
// query names its table's alias (c, m, a, o) so the lists work in joins.
const (
	convCols = `c.id, c.contact_id, c.channel, c.external_id, c.status, IFNULL(c.assignee_id, 0),
		c.last_seq, c.last_inbound_at, c.queued_at, c.created_at, c.updated_at, c.resolved_at`
	msgCols = `m.id, m.conversation_id, m.seq, m.sender_kind, m.sender_id, m.visibility, m.kind, m.text,
		m.media_key IS NOT NULL, IFNULL(m.media_key, ''), m.media_name, m.media_type, m.media_size, m.media_preview,
		m.event_type IS NOT NULL, IFNULL(m.event_type, ''), m.event_agent_id, m.event_from_id, m.event_by_id,
		m.status, m.fail_reason, IFNULL(m.dedup_key, ''), IFNULL(m.external_id, ''), IFNULL(m.resend_of, 0),
		m.created_at`
	agentCols  = `a.id, a.email, a.name, a.role, a.password_hash, a.active, a.wecom_userid, a.slack_user, a.created_at`
	outboxCols = `o.id, o.channel, o.key, IFNULL(o.message_id, 0), o.payload, o.attempts, o.next_attempt_at,
		o.last_error, o.created_at`
	contactCols = `id, name, created_at`
	// msgInsCols are the columns an insert sets, in msgArgs order.
	msgInsCols = `conversation_id, seq, sender_kind, sender_id, visibility, kind, text,
		media_key, media_name, media_type, media_size, media_preview, event_type, event_agent_id, event_from_id, event_by_id,
		status, fail_reason, dedup_key, external_id, resend_of, created_at`
)

// wstmt names a statement prepared once on the writer connection.
type wstmt int

const (
	stSavepoint wstmt = iota
	stRelease
	stRollbackTo

	stContact
	stIdentityLookup
	stContactIns
	stContactName
	stIdentityIns

	stConv
	stConvLatest
	stConvIns
	stConvSave
	stConvBump
	stOpenCount

	stMsg
	stMsgByDedup
	stMsgIns
	stMsgStatus
	stMarkContactDelivered
	stMarkContactRead
	stMarkAgentDelivered
	stMarkAgentRead

	stAgent
	stAgentIns
	stAgentUpd

	stOutbox
	stOutboxIns
	stOutboxRetry
	stOutboxDel

	numWStmts
)

var wstmtSQL = [numWStmts]string{
	stSavepoint:  `SAVEPOINT op`,
	stRelease:    `RELEASE op`,
	stRollbackTo: `ROLLBACK TO op`,

	stContact: `SELECT ` + contactCols + ` FROM contacts WHERE id = ?`,
	// An identity's contact and its live conversation (0: none).
	stIdentityLookup: `SELECT c.id, c.name, c.created_at, IFNULL((SELECT v.id FROM conversations v
			WHERE v.channel = i.channel AND v.external_id = i.external_id AND v.status <> 'resolved'), 0)
		FROM identities i JOIN contacts c ON c.id = i.contact_id
		WHERE i.channel = ? AND i.external_id = ?`,
	stContactIns:  `INSERT INTO contacts (name, created_at) VALUES (?, ?)`,
	stContactName: `UPDATE contacts SET name = ? WHERE id = ?`,
	stIdentityIns: `INSERT INTO identities (channel, external_id, contact_id) VALUES (?, ?, ?)`,

	stConv: `SELECT ` + convCols + ` FROM conversations c WHERE c.id = ?`,
	stConvLatest: `SELECT ` + convCols + ` FROM conversations c
		WHERE c.channel = ? AND c.external_id = ? ORDER BY c.id DESC LIMIT 1`,
	stConvIns: `INSERT INTO conversations (contact_id, channel, external_id, status, assignee_id, last_seq,
		last_inbound_at, queued_at, created_at, updated_at, resolved_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	stConvSave: `UPDATE conversations SET status = ?, assignee_id = ?, last_seq = ?, last_inbound_at = ?,
		queued_at = ?, updated_at = ?, resolved_at = ? WHERE id = ?`,
	// After a message. It changes no indexed column, so it is cheap.
	stConvBump:  `UPDATE conversations SET last_seq = ?, updated_at = ?, last_inbound_at = ? WHERE id = ?`,
	stOpenCount: `SELECT count(*) FROM conversations WHERE assignee_id = ? AND status = 'open' AND id <> ?`,

	stMsg:        `SELECT ` + msgCols + ` FROM messages m WHERE m.id = ?`,
	stMsgByDedup: `SELECT ` + msgCols + ` FROM messages m WHERE m.dedup_key = ?`,
	// A message whose dedup key is taken is not inserted (no row changes).
	stMsgIns: `INSERT INTO messages (` + msgInsCols + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (dedup_key) DO NOTHING`,
	stMsgStatus: `UPDATE messages SET status = ?, fail_reason = ?, external_id = ? WHERE id = ?`,
	// What a customer receives: public messages not their own.
	stMarkContactDelivered: markSQL(`m.visibility = 'public' AND m.sender_kind <> 'contact'`, core.MsgDelivered),
	stMarkContactRead:      markSQL(`m.visibility = 'public' AND m.sender_kind <> 'contact'`, core.MsgRead),
	// What an agent receives (for receipts): the customer's messages.
	stMarkAgentDelivered: markSQL(`m.sender_kind = 'contact'`, core.MsgDelivered),
	stMarkAgentRead:      markSQL(`m.sender_kind = 'contact'`, core.MsgRead),

	stAgent: `SELECT ` + agentCols + ` FROM agents a WHERE a.id = ?`,
	stAgentIns: `INSERT INTO agents (email, email_key, name, role, password_hash, active, wecom_userid,
		slack_user, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	// An active admin stays one unless another active admin exists (?4 and
	// ?6 are the new role and active): no update leaves none.
	stAgentUpd: `UPDATE agents SET email = ?, email_key = ?, name = ?, role = ?, password_hash = ?, active = ?,
		wecom_userid = ?, slack_user = ? WHERE id = ? AND (NOT (role = 'admin' AND active) OR (?4 = 'admin' AND ?6)
		OR EXISTS (SELECT 1 FROM agents o WHERE o.id <> agents.id AND o.role = 'admin' AND o.active))`,

	stOutbox: `SELECT ` + outboxCols + ` FROM outbox o WHERE o.id = ?`,
	stOutboxIns: `INSERT INTO outbox (channel, key, message_id, payload, attempts, next_attempt_at, last_error,
		created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
	stOutboxRetry: `UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?`,
	stOutboxDel:   `DELETE FROM outbox WHERE id = ?`,
}

// markSQL is MarkUpTo's update for one kind of reader and one target status:
// it moves the reader's messages up to a sequence number, but only those
// whose status advances to target (the statuses are core's constants, so
// they are written into the statement). Parameters: target, conversation,
// up-to sequence number.
func markSQL(reader string, target core.MessageStatus) string {
	var from []string
	for _, st := range []core.MessageStatus{core.MsgPending, core.MsgSent, core.MsgDelivered, core.MsgRead, core.MsgFailed} {
		if st.Advances(target) {
			from = append(from, "'"+string(st)+"'")
		}
	}
	return fmt.Sprintf(`UPDATE messages AS m SET status = ?
		WHERE m.conversation_id = ? AND m.seq <= ? AND m.status IN (%s) AND %s`,
		strings.Join(from, ", "), reader)
}

// outboxHead keeps an outbox row o only if it is the oldest of its channel
// and key (an index probe on outbox_key per row).
const outboxHead = `NOT EXISTS (SELECT 1 FROM outbox x WHERE x.channel = o.channel AND x.key = o.key AND x.id < o.id)`

// rstmt names a statement prepared once on the read pool.
type rstmt int

const (
	rsConv rstmt = iota
	rsConvExists
	rsContact
	rsMsg
	rsMsgByDedup
	rsMsgByExternal
	rsMsgsAfter
	rsMsgsBefore
	rsFeed
	rsQueue
	rsQueuePosition
	rsOpenCounts
	rsAgent
	rsAgentByEmail
	rsAgents
	rsOutbox
	rsOutboxHead
	rsOutboxDue
	rsOutboxDueChannel
	rsOutboxStats

	numRStmts
)

var rstmtSQL = [numRStmts]string{
	rsConv:       `SELECT ` + convCols + ` FROM conversations c WHERE c.id = ?`,
	rsConvExists: `SELECT 1 FROM conversations WHERE id = ?`,
	rsContact:    `SELECT ` + contactCols + ` FROM contacts WHERE id = ?`,
	rsMsg:        `SELECT ` + msgCols + ` FROM messages m WHERE m.id = ?`,
	rsMsgByDedup: `SELECT ` + msgCols + ` FROM messages m WHERE m.dedup_key = ?`,
	rsMsgByExternal: `SELECT ` + msgCols + ` FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.external_id = ? AND c.channel = ? ORDER BY m.id DESC LIMIT 1`,
	// Parameters: conversation, after seq, before seq, public only, limit.
	rsMsgsAfter: `SELECT ` + msgCols + ` FROM messages m
		WHERE m.conversation_id = ? AND m.seq > ? AND m.seq < ? AND (? = 0 OR m.visibility = 'public')
		ORDER BY m.seq LIMIT ?`,
	rsMsgsBefore: `SELECT ` + msgCols + ` FROM messages m
		WHERE m.conversation_id = ? AND m.seq > ? AND m.seq < ? AND (? = 0 OR m.visibility = 'public')
		ORDER BY m.seq DESC LIMIT ?`,
	rsFeed: `SELECT ` + msgCols + ` FROM messages m WHERE m.id > ? ORDER BY m.id LIMIT ?`,
	rsQueue: `SELECT ` + convCols + ` FROM conversations c WHERE c.status = 'pending'
		ORDER BY c.queued_at, c.id LIMIT ?`,
	rsQueuePosition: `SELECT count(*) FROM conversations c, conversations q WHERE c.id = ? AND c.status = 'pending'
		AND q.status = 'pending' AND (q.queued_at, q.id) <= (c.queued_at, c.id)`,
	rsOpenCounts: `SELECT assignee_id, count(*) FROM conversations
		WHERE status = 'open' AND assignee_id IS NOT NULL GROUP BY assignee_id`,
	rsAgent:        `SELECT ` + agentCols + ` FROM agents a WHERE a.id = ?`,
	rsAgentByEmail: `SELECT ` + agentCols + ` FROM agents a WHERE a.email_key = ?`,
	rsAgents:       `SELECT ` + agentCols + ` FROM agents a ORDER BY a.id`,
	rsOutbox:       `SELECT ` + outboxCols + ` FROM outbox o WHERE o.id = ?`,
	rsOutboxHead: `SELECT ` + outboxCols + ` FROM outbox o WHERE o.channel = ? AND o.key = ?
		ORDER BY o.id LIMIT 1`,
	rsOutboxDue: `SELECT ` + outboxCols + ` FROM outbox o WHERE o.next_attempt_at <= ? AND ` + outboxHead + `
		ORDER BY o.id LIMIT ?`,
	rsOutboxDueChannel: `SELECT ` + outboxCols + ` FROM outbox o WHERE o.channel = ? AND o.next_attempt_at <= ?
		AND ` + outboxHead + ` ORDER BY o.id LIMIT ?`,
	rsOutboxStats: `SELECT count(*), IFNULL(min(created_at), 0) FROM outbox`,
}
