package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kefuhq/kefu/core"
)

// Settings, agents' sessions and identity moves: small, rare writes.

// EnsureSetting implements core.Store: the first value stored under key wins,
// on any node (the key is unique; a second writer's insert does nothing and
// reads the first one's value).
func (s *Store) EnsureSetting(ctx context.Context, key, value string) (string, error) {
	if key == "" {
		return "", invalid("empty setting key")
	}
	var stored string
	err := s.do(ctx, func(w *wtx) error {
		if _, err := w.exec(`INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`,
			key, value); err != nil {
			return dbErr(err, "store setting %s", key)
		}
		// A statement of its own: it sees a value committed by another
		// writer whose insert this one waited for.
		err := w.queryRow(`SELECT value FROM settings WHERE key = $1`, key).Scan(&stored)
		return dbErr(err, "setting %s", key)
	})
	if err != nil {
		return "", err
	}
	return stored, nil
}

// Setting implements core.Store.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	if s.isClosed.Load() {
		return "", core.ErrClosed
	}
	var v string
	if err := s.pool.QueryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v); err != nil {
		return "", s.readErr(err, "setting %s", key)
	}
	return v, nil
}

// PutSetting implements core.Store.
func (s *Store) PutSetting(ctx context.Context, key, value string) error {
	if key == "" {
		return invalid("empty setting key")
	}
	return s.do(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO settings (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return dbErr(err, "store setting %s", key)
	})
}

// MediaUsed implements core.Store.
func (s *Store) MediaUsed(ctx context.Context, key string) (bool, error) {
	if s.isClosed.Load() {
		return false, core.ErrClosed
	}
	var used bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE media_key = $1)`, key).Scan(&used)
	if err != nil {
		return false, s.readErr(err, "messages with media %s", key)
	}
	return used, nil
}

// Settings implements core.Store.
func (s *Store) Settings(ctx context.Context, prefix, after string, limit int) ([]core.Setting, error) {
	if limit < 1 || limit > core.MaxBatchRead {
		return nil, invalid("settings: limit %d (1 to %d)", limit, core.MaxBatchRead)
	}
	// key >= $1 lets the primary key's index start at the prefix (a key
	// that extends the prefix sorts after it in every collation).
	return list(ctx, s, scanSetting, "settings", `SELECT key, value FROM settings
		WHERE key >= $1 AND key > $2 AND starts_with(key, $1) ORDER BY key LIMIT $3`,
		prefix, after, limit)
}

func scanSetting(r rowScanner) (core.Setting, error) {
	var kv core.Setting
	err := r.Scan(&kv.Key, &kv.Value)
	return kv, err
}

// ReplaceSetting implements core.Store.
func (s *Store) ReplaceSetting(ctx context.Context, key, old, value string) (bool, error) {
	return s.changeSetting(ctx, key, `UPDATE settings SET value = $1 WHERE key = $2 AND value = $3`, value, key, old)
}

// DeleteSetting implements core.Store.
func (s *Store) DeleteSetting(ctx context.Context, key, old string) (bool, error) {
	return s.changeSetting(ctx, key, `DELETE FROM settings WHERE key = $1 AND value = $2`, key, old)
}

// changeSetting runs a conditional write of key and reports whether it
// changed a row.
func (s *Store) changeSetting(ctx context.Context, key, q string, args ...any) (bool, error) {
	if key == "" {
		return false, invalid("empty setting key")
	}
	var n int64
	err := s.do(ctx, func(w *wtx) error {
		tag, err := w.exec(q, args...)
		n = tag.RowsAffected()
		return dbErr(err, "change setting %s", key)
	})
	return n == 1, err
}

// CreateSession implements core.Store. TokenHash, AgentID and ExpiresAt are
// required (ErrInvalid); CreatedAt defaults to now. An unknown agent is
// ErrNotFound, a token hash already stored ErrConflict.
func (s *Store) CreateSession(ctx context.Context, ss core.Session) error {
	if ss.TokenHash == "" || ss.AgentID <= 0 || ss.ExpiresAt.IsZero() {
		return invalid("session needs a token hash, an agent and an expiry")
	}
	ss.CreatedAt = s.nowOr(ss.CreatedAt)
	return s.do(ctx, func(w *wtx) error {
		_, err := w.exec(`INSERT INTO sessions (`+sessionCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			ss.TokenHash, ss.AgentID, ts(ss.CreatedAt), ts(norm(ss.ExpiresAt)), ss.IP, ss.UserAgent)
		return dbErr(err, "create session for agent %d", ss.AgentID)
	})
}

// Session implements core.Store.
func (s *Store) Session(ctx context.Context, tokenHash string) (core.Session, error) {
	if s.isClosed.Load() {
		return core.Session{}, core.ErrClosed
	}
	var ss core.Session
	var created, expires pgtype.Timestamptz
	err := s.pool.QueryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE token_hash = $1`, tokenHash).
		Scan(&ss.TokenHash, &ss.AgentID, &created, &expires, &ss.IP, &ss.UserAgent)
	if err != nil {
		return core.Session{}, s.readErr(err, "session")
	}
	ss.CreatedAt, ss.ExpiresAt = fromTS(created), fromTS(expires)
	return ss, nil
}

// RevokeSession implements core.Store.
func (s *Store) RevokeSession(ctx context.Context, tokenHash string) error {
	_, err := s.deleteSessions(ctx, `token_hash = $1`, tokenHash)
	return err
}

// RevokeSessions implements core.Store.
func (s *Store) RevokeSessions(ctx context.Context, agentID int64) (int, error) {
	return s.deleteSessions(ctx, `agent_id = $1`, agentID)
}

// DeleteExpiredSessions implements core.Store: sessions whose ExpiresAt is
// before now.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	return s.deleteSessions(ctx, `expires_at < $1`, ts(now))
}

func (s *Store) deleteSessions(ctx context.Context, where string, arg any) (int, error) {
	var n int64
	err := s.do(ctx, func(w *wtx) error {
		tag, err := w.exec(`DELETE FROM sessions WHERE `+where, arg)
		n = tag.RowsAffected()
		return dbErr(err, "delete sessions")
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// MoveIdentity implements core.Store. The identity's key changes in place;
// its conversations follow through their foreign key (ON UPDATE CASCADE).
func (s *Store) MoveIdentity(ctx context.Context, channel, from, to string) error {
	if channel == "" || from == "" || to == "" {
		return invalid("moving an identity needs a channel and both ids")
	}
	if from == to {
		return nil
	}
	return s.do(ctx, func(w *wtx) error {
		tag, err := w.exec(`UPDATE identities SET external_id = $3 WHERE channel = $1 AND external_id = $2`,
			channel, from, to)
		if err != nil { // (channel, to) taken: ErrConflict
			return dbErr(err, "move identity %s/%s to %s", channel, from, to)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("postgres: identity %s/%s: %w", channel, from, core.ErrNotFound)
		}
		return nil
	})
}
