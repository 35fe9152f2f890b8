package sqlite

import (
	"context"
	"encoding/json"

	"github.com/kefuhq/kefu/core"
)

// Batch reads for lists. The IDs travel as one JSON array parameter read
// with json_each, so each read is one statement whatever the number of IDs.

const (
	sqlContacts = `SELECT ` + contactCols + ` FROM contacts WHERE id IN (SELECT value FROM json_each(?))`
	// For each conversation, walk its messages newest first (the
	// (conversation_id, seq) index) to the first one that is not an event.
	sqlLastMessages = `SELECT ` + msgCols + ` FROM messages m WHERE m.id IN (
		SELECT (SELECT x.id FROM messages x WHERE x.conversation_id = j.value AND x.kind <> 'event'
			ORDER BY x.seq DESC LIMIT 1)
		FROM json_each(?) j)`
)

// idArray encodes ids as the JSON array json_each reads.
func idArray(ids []int64) (string, error) {
	if len(ids) > core.MaxBatchRead {
		return "", invalid("%d ids in one read (at most %d)", len(ids), core.MaxBatchRead)
	}
	b, err := json.Marshal(ids)
	return string(b), err
}

// Contacts implements core.Store.
func (s *Store) Contacts(ctx context.Context, ids []int64) ([]core.Contact, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	arg, err := idArray(ids)
	if err != nil {
		return nil, err
	}
	return queryList(ctx, s, scanContact, "contacts", sqlContacts, arg)
}

// LastMessages implements core.Store.
func (s *Store) LastMessages(ctx context.Context, convIDs []int64) (map[int64]core.Message, error) {
	out := make(map[int64]core.Message, len(convIDs))
	if len(convIDs) == 0 {
		return out, nil
	}
	arg, err := idArray(convIDs)
	if err != nil {
		return nil, err
	}
	ms, err := queryList(ctx, s, scanMsg, "last messages", sqlLastMessages, arg)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		out[m.ConversationID] = m
	}
	return out, nil
}

// queryList runs an ad hoc read on the read pool and scans every row.
func queryList[T any](ctx context.Context, s *Store, scan func(scanner) (T, error), what, q string,
	args ...any) ([]T, error) {
	if s.isClosed.Load() {
		return nil, core.ErrClosed
	}
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, s.readErr(err, "%s", what)
	}
	defer func() { _ = rows.Close() }()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, s.readErr(err, "%s", what)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr(err, "%s", what)
	}
	return out, nil
}
