package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kefuhq/kefu/core"
)

// MoveIdentity implements core.Store. It is rare (a Telegram chat
// migration), so its statements are not prepared ahead.
func (s *Store) MoveIdentity(ctx context.Context, channel, from, to string) error {
	if channel == "" || from == "" || to == "" {
		return invalid("moving an identity needs a channel and both ids")
	}
	if from == to {
		return nil
	}
	return s.do(ctx, func(w *wtx) error {
		var contactID int64
		err := w.tx.QueryRowContext(w.ctx, `SELECT contact_id FROM identities WHERE channel = ? AND external_id = ?`,
			channel, from).Scan(&contactID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: identity %s/%s: %w", channel, from, core.ErrNotFound)
		}
		if err != nil {
			return dbErr(err, "identity %s/%s", channel, from)
		}
		// The new identity first, so that the conversations' foreign key
		// holds at every step; then the conversations; then the old one.
		if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO identities (channel, external_id, contact_id) VALUES (?, ?, ?)`,
			channel, to, contactID); err != nil {
			return dbErr(err, "move identity %s/%s to %s", channel, from, to)
		}
		rows, err := w.tx.QueryContext(w.ctx, `SELECT id FROM conversations WHERE channel = ? AND external_id = ?`, channel, from)
		if err != nil {
			return dbErr(err, "conversations of %s/%s", channel, from)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return dbErr(err, "conversations of %s/%s", channel, from)
			}
			ids = append(ids, id)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return dbErr(err, "conversations of %s/%s", channel, from)
		}
		if len(ids) > 0 {
			w.s.idents.add(channel, to) // before the commit: see identFilter
		}
		if _, err := w.tx.ExecContext(w.ctx, `UPDATE conversations SET external_id = ? WHERE channel = ? AND external_id = ?`,
			to, channel, from); err != nil {
			return dbErr(err, "move conversations of %s/%s", channel, from)
		}
		if _, err := w.tx.ExecContext(w.ctx, `DELETE FROM identities WHERE channel = ? AND external_id = ?`, channel, from); err != nil {
			return dbErr(err, "delete identity %s/%s", channel, from)
		}
		// Keep the writer's cache exact. put records the rows as touched,
		// so a rollback of this op evicts them.
		for _, id := range ids {
			if c, ok := w.s.cache.get(id); ok {
				c.ExternalID = to
				w.s.cache.put(c)
			}
		}
		return nil
	})
}
