package postgres

import (
	"fmt"
	"strings"

	"github.com/kefuhq/kefu/core"
)

// Column lists, in the order the scan functions in rows.go read them. Every
// query names its table's alias (c, m, a, o) so the lists work in joins and
// on the rows a CTE returns.
const (
	convCols = `c.id, c.contact_id, c.channel, c.external_id, c.status, COALESCE(c.assignee_id, 0),
		c.last_seq, c.last_inbound_at, c.queued_at, c.created_at, c.updated_at, c.resolved_at`
	msgCols = `m.id, m.conversation_id, m.seq, m.sender_kind, m.sender_id, m.visibility, m.kind, m.text,
		m.media_key IS NOT NULL, COALESCE(m.media_key, ''), m.media_name, m.media_type, m.media_size, m.media_preview,
		m.event_type IS NOT NULL, COALESCE(m.event_type, ''), m.event_agent_id, m.event_from_id, m.event_by_id,
		m.status, m.fail_reason, COALESCE(m.dedup_key, ''), COALESCE(m.external_id, ''), COALESCE(m.resend_of, 0),
		m.created_at`
	agentCols  = `a.id, a.email, a.name, a.role, a.password_hash, a.active, a.wecom_userid, a.slack_user, a.created_at`
	outboxCols = `o.id, o.channel, o.key, COALESCE(o.message_id, 0), o.payload, o.attempts, o.next_attempt_at,
		o.last_error, o.created_at`
	contactCols = `id, name, created_at`
	sessionCols = `token_hash, agent_id, created_at, expires_at, ip, user_agent`

	// msgDataCols are a message's columns after conversation_id and seq, in
	// msgArgs order; msgVals are their parameters $1…$20, typed.
	msgDataCols = `sender_kind, sender_id, visibility, kind, text,
		media_key, media_name, media_type, media_size, media_preview, event_type, event_agent_id, event_from_id,
		event_by_id, status, fail_reason, dedup_key, external_id, resend_of, created_at`
	msgVals = `$1::text, $2::bigint, $3::text, $4::text, $5::text,
		$6::text, $7::text, $8::text, $9::bigint, $10::text, $11::text, $12::bigint, $13::bigint,
		$14::bigint, $15::text, $16::text, $17::text, $18::text, $19::bigint, $20::timestamptz`
	// msgAt is the message's CreatedAt parameter.
	msgAt = `$20::timestamptz`
	// msgNew holds when the message's dedup key ($17) is free. An INSERT
	// draws its ID before ON CONFLICT finds the key taken, so a duplicate
	// would burn an ID; a source row filtered by msgNew draws none. IDs must
	// stay dense: a hole is waited for by every node's sequencer
	// (channels/web) as an update still in flight, holding back every
	// conversation's updates for its full wait. Writes run one at a time
	// under the write_lock, so the check cannot race; ON CONFLICT stays as
	// the guarantee.
	msgNew = `NOT EXISTS (SELECT 1 FROM messages x WHERE x.dedup_key = $17::text)`
)

// withMessage wraps a statement that writes one conversation row and
// returns it (RETURNING *) so that the same statement appends a message to
// that conversation with sequence number c.last_seq: parameters $1…$20 are
// the message (msgArgs), the statement's own start at $21. A message whose
// dedup key is taken is not inserted. The statement returns the
// conversation and the message's ID (0: not inserted); no row when the
// conversation statement wrote none.
func withMessage(conv string) string {
	return `WITH c AS (` + conv + `), m AS (
		INSERT INTO messages (conversation_id, seq, ` + msgDataCols + `)
		SELECT c.id, c.last_seq, ` + msgVals + ` FROM c WHERE ` + msgNew + `
		ON CONFLICT (dedup_key) DO NOTHING
		RETURNING id)
	SELECT ` + convCols + `, COALESCE((SELECT id FROM m), 0) FROM c`
}

var (
	// sqlAppend: $21 conversation, $22 deliver (also enqueue an outbox entry
	// for the conversation's channel, key: the conversation). It returns the
	// conversation, the message's ID and the entry's ID (0: none).
	sqlAppend = `WITH c AS (
		UPDATE conversations SET last_seq = last_seq + 1, updated_at = GREATEST(updated_at, ` + msgAt + `),
			last_inbound_at = CASE WHEN $1::text = 'contact' THEN GREATEST(last_inbound_at, ` + msgAt + `)
				ELSE last_inbound_at END
		WHERE id = $21 RETURNING *
	), m AS (
		INSERT INTO messages (conversation_id, seq, ` + msgDataCols + `)
		SELECT c.id, c.last_seq, ` + msgVals + ` FROM c WHERE ` + msgNew + `
		ON CONFLICT (dedup_key) DO NOTHING
		RETURNING id
	), o AS (
		INSERT INTO outbox (channel, key, message_id, next_attempt_at, created_at)
		SELECT c.channel, c.id::text, m.id, ` + msgAt + `, ` + msgAt + ` FROM c, m WHERE $22::boolean
		RETURNING id
	)
	SELECT ` + convCols + `, COALESCE((SELECT id FROM m), 0), COALESCE((SELECT id FROM o), 0) FROM c`

	// sqlNewConv: a new pending conversation with its first message. $21
	// contact, $22 channel, $23 external id; the message's time is the
	// conversation's.
	sqlNewConv = withMessage(`INSERT INTO conversations (contact_id, channel, external_id, status, last_seq,
			last_inbound_at, queued_at, created_at, updated_at)
		VALUES ($21, $22, $23, 'pending', 1, ` + msgAt + `, ` + msgAt + `, ` + msgAt + `, ` + msgAt + `)
		RETURNING *`)

	// sqlAssign: $21 conversation, $22 new assignee (NULL: none), $23 new
	// status, $24 time of the change, $25 expected assignee (NULL: none),
	// $26 keep the queue place (core.Assignment.KeepPlace).
	sqlAssign = withMessage(`UPDATE conversations SET assignee_id = $22::bigint, status = $23::text,
			queued_at = CASE WHEN $22::bigint IS NULL AND NOT $26::boolean THEN $24::timestamptz ELSE queued_at END,
			updated_at = $24::timestamptz, last_seq = last_seq + 1
		WHERE id = $21 AND status <> 'resolved' AND assignee_id IS NOT DISTINCT FROM $25::bigint
		RETURNING *`)

	// sqlResolve and sqlReopen: $21 conversation, $22 time, $23 expected
	// status ('' for any). Reopening makes the conversation open with its
	// assignee, else pending and queued now (unless it was already waiting).
	sqlResolve = withMessage(`UPDATE conversations SET status = 'resolved', resolved_at = $22::timestamptz,
			updated_at = $22::timestamptz, last_seq = last_seq + 1
		WHERE id = $21 AND ($23::text = '' OR status = $23::text)
		RETURNING *`)
	sqlReopen = withMessage(`UPDATE conversations SET
			status = CASE WHEN assignee_id IS NOT NULL THEN 'open' ELSE 'pending' END,
			queued_at = CASE WHEN assignee_id IS NULL AND status <> 'pending' THEN $22::timestamptz ELSE queued_at END,
			resolved_at = NULL, updated_at = $22::timestamptz, last_seq = last_seq + 1
		WHERE id = $21 AND ($23::text = '' OR status = $23::text)
		RETURNING *`)

	// sqlMsgIns: a message with an explicit conversation ($21) and sequence
	// number ($22).
	sqlMsgIns = `INSERT INTO messages (conversation_id, seq, ` + msgDataCols + `)
		SELECT $21::bigint, $22::bigint, ` + msgVals + ` WHERE ` + msgNew + `
		ON CONFLICT (dedup_key) DO NOTHING
		RETURNING id`
)

const (
	sqlConv       = `SELECT ` + convCols + ` FROM conversations c WHERE c.id = $1`
	sqlConvExists = `SELECT 1 FROM conversations WHERE id = $1`
	sqlConvStatus = `SELECT status, COALESCE(assignee_id, 0) FROM conversations WHERE id = $1`
	sqlConvLatest = `SELECT ` + convCols + ` FROM conversations c
		WHERE c.channel = $1 AND c.external_id = $2 ORDER BY c.id DESC LIMIT 1 FOR UPDATE`
	sqlConvSave = `UPDATE conversations SET status = $1, assignee_id = $2, last_seq = $3, last_inbound_at = $4,
		queued_at = $5, updated_at = $6, resolved_at = $7 WHERE id = $8`
	sqlOpenCount = `SELECT count(*) FROM conversations WHERE assignee_id = $1 AND status = 'open' AND id <> $2`

	sqlContact = `SELECT ` + contactCols + ` FROM contacts WHERE id = $1`
	// An identity's contact and its live conversation (0: none).
	sqlIdentityLookup = `SELECT c.id, c.name, c.created_at, COALESCE((SELECT v.id FROM conversations v
			WHERE v.channel = i.channel AND v.external_id = i.external_id AND v.status <> 'resolved'), 0)
		FROM identities i JOIN contacts c ON c.id = i.contact_id
		WHERE i.channel = $1 AND i.external_id = $2`
	// A new contact with its identity: $1 name, $2 created at, $3 channel,
	// $4 external id.
	sqlContactIns = `WITH ct AS (INSERT INTO contacts (name, created_at) VALUES ($1, $2) RETURNING id),
		i AS (INSERT INTO identities (channel, external_id, contact_id) SELECT $3, $4, id FROM ct)
		SELECT id FROM ct`
	sqlContactName = `UPDATE contacts SET name = $1 WHERE id = $2`

	sqlMsg        = `SELECT ` + msgCols + ` FROM messages m WHERE m.id = $1`
	sqlMsgByDedup = `SELECT ` + msgCols + ` FROM messages m WHERE m.dedup_key = $1`
	// sqlMsgStatus moves a message to $2 when its status is one of $5 (those
	// from which $2 is a step forward).
	sqlMsgStatus = `UPDATE messages AS m SET status = $2::text,
			fail_reason = CASE WHEN $2::text = 'failed' THEN $3::text ELSE m.fail_reason END,
			external_id = COALESCE($4::text, m.external_id)
		WHERE m.id = $1 AND m.status = ANY($5::text[])
		RETURNING ` + msgCols
	// sqlMsgExternalID records the provider's id of a message that has none.
	sqlMsgExternalID = `UPDATE messages SET external_id = $2 WHERE id = $1 AND external_id IS NULL`

	sqlAgent = `SELECT ` + agentCols + ` FROM agents a WHERE a.id = $1`
	// sqlAgentLock locks an agent whose open conversations are counted
	// (an assignment at capacity); sqlAgentShare holds one that is being
	// assigned against a concurrent deactivation. Both read whether the
	// agent is active.
	sqlAgentLock  = `SELECT active FROM agents WHERE id = $1 FOR UPDATE`
	sqlAgentShare = `SELECT active FROM agents WHERE id = $1 FOR SHARE`
	sqlAgentIns   = `INSERT INTO agents (email, name, role, password_hash, active, wecom_userid, slack_user,
		created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`
	// An active admin stays one unless another active admin exists: no
	// update leaves none. kefu's writers already take write_lock, which
	// orders two nodes' changes; sqlAgentAdminsLock, taken first in the
	// same transaction, also orders this one after a transaction that does
	// not (a psql session changing an admin), so that the EXISTS, a
	// statement later, sees its result.
	sqlAgentUpd = `UPDATE agents SET email = $1, name = $2, role = $3, password_hash = $4, active = $5,
		wecom_userid = $6, slack_user = $7 WHERE id = $8 AND (NOT (role = 'admin' AND active) OR ($3 = 'admin' AND $5)
		OR EXISTS (SELECT 1 FROM agents o WHERE o.id <> agents.id AND o.role = 'admin' AND o.active))`
	sqlAgentAdminsLock = `SELECT id FROM agents WHERE role = 'admin' AND active ORDER BY id FOR UPDATE`
	sqlAgentExists     = `SELECT count(*) FROM agents WHERE id = $1`

	sqlOutbox    = `SELECT ` + outboxCols + ` FROM outbox o WHERE o.id = $1`
	sqlOutboxIns = `INSERT INTO outbox (channel, key, message_id, payload, attempts, next_attempt_at, last_error,
		created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`
	sqlOutboxRetry = `UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1`
	sqlOutboxDel   = `DELETE FROM outbox WHERE id = $1 RETURNING COALESCE(message_id, 0)`
)

// advancesTo lists the statuses from which a message moves forward to
// target (core.MessageStatus.Advances).
func advancesTo(target core.MessageStatus) []string {
	var from []string
	for _, st := range []core.MessageStatus{core.MsgPending, core.MsgSent, core.MsgDelivered, core.MsgRead, core.MsgFailed} {
		if st.Advances(target) {
			from = append(from, string(st))
		}
	}
	return from
}

// markSQL is MarkUpTo's statement for one kind of reader and one target
// status: it moves the reader's messages up to a sequence number, but only
// those whose status advances to target (the statuses are core's constants,
// so they are written into the statement). Parameters: conversation, up-to
// sequence number. It returns whether the conversation exists and how many
// messages moved.
func markSQL(reader string, target core.MessageStatus) string {
	from := advancesTo(target)
	for i, st := range from {
		from[i] = "'" + st + "'"
	}
	return fmt.Sprintf(`WITH u AS (
		UPDATE messages AS m SET status = '%s'
		WHERE m.conversation_id = $1 AND m.seq <= $2 AND m.status IN (%s) AND %s
		RETURNING 1)
	SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1), (SELECT count(*) FROM u)`,
		target, strings.Join(from, ", "), reader)
}

var (
	// What a customer receives: public messages not their own.
	sqlMarkContactDelivered = markSQL(`m.visibility = 'public' AND m.sender_kind <> 'contact'`, core.MsgDelivered)
	sqlMarkContactRead      = markSQL(`m.visibility = 'public' AND m.sender_kind <> 'contact'`, core.MsgRead)
	// What an agent receives (for receipts): the customer's messages.
	sqlMarkAgentDelivered = markSQL(`m.sender_kind = 'contact'`, core.MsgDelivered)
	sqlMarkAgentRead      = markSQL(`m.sender_kind = 'contact'`, core.MsgRead)
)

// Reads.
const (
	sqlMsgByExternal = `SELECT ` + msgCols + ` FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.external_id = $1 AND c.channel = $2 ORDER BY m.id DESC LIMIT 1`
	// Parameters: conversation, after seq, before seq (0: none), public only, limit.
	sqlMsgsAfter = `SELECT ` + msgCols + ` FROM messages m
		WHERE m.conversation_id = $1 AND m.seq > $2 AND ($3::bigint = 0 OR m.seq < $3)
			AND (NOT $4::boolean OR m.visibility = 'public')
		ORDER BY m.seq LIMIT $5`
	sqlMsgsBefore = `SELECT ` + msgCols + ` FROM messages m
		WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3
			AND (NOT $4::boolean OR m.visibility = 'public')
		ORDER BY m.seq DESC LIMIT $5`
	sqlFeed  = `SELECT ` + msgCols + ` FROM messages m WHERE m.id > $1 ORDER BY m.id LIMIT $2`
	sqlQueue = `SELECT ` + convCols + ` FROM conversations c WHERE c.status = 'pending'
		ORDER BY c.queued_at, c.id LIMIT $1`
	sqlQueuePosition = `SELECT count(*) FROM conversations c, conversations q WHERE c.id = $1 AND c.status = 'pending'
		AND q.status = 'pending' AND (q.queued_at, q.id) <= (c.queued_at, c.id)`
	sqlOpenCounts = `SELECT assignee_id, count(*) FROM conversations
		WHERE status = 'open' AND assignee_id IS NOT NULL GROUP BY assignee_id`
	sqlAgentByEmail = `SELECT ` + agentCols + ` FROM agents a WHERE lower(a.email) = lower($1)`
	sqlAgents       = `SELECT ` + agentCols + ` FROM agents a ORDER BY a.id`
	sqlOutboxHead   = `SELECT ` + outboxCols + ` FROM outbox o WHERE o.channel = $1 AND o.key = $2
		ORDER BY o.id LIMIT 1`
	// The oldest entry of its channel and key only (an index probe on
	// outbox_key per row).
	sqlOutboxDue = `SELECT ` + outboxCols + ` FROM outbox o WHERE o.next_attempt_at <= $1
		AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.channel = o.channel AND x.key = o.key AND x.id < o.id)
		ORDER BY o.id LIMIT $2`
	sqlOutboxDueChannel = `SELECT ` + outboxCols + ` FROM outbox o WHERE o.channel = $1 AND o.next_attempt_at <= $2
		AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.channel = o.channel AND x.key = o.key AND x.id < o.id)
		ORDER BY o.id LIMIT $3`
	sqlOutboxStats = `SELECT count(*), min(created_at) FROM outbox`
	sqlContacts    = `SELECT ` + contactCols + ` FROM contacts WHERE id = ANY($1::bigint[])`
	// For each conversation, walk its messages newest first (the
	// (conversation_id, seq) index) to the first one that is not an event.
	sqlLastMessages = `SELECT ` + msgCols + ` FROM (SELECT DISTINCT unnest($1::bigint[]) AS id) j
		CROSS JOIN LATERAL (SELECT * FROM messages x WHERE x.conversation_id = j.id AND x.kind <> 'event'
			ORDER BY x.seq DESC LIMIT 1) m`
)
