package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Settings and agents' sessions: small, rare writes, so their statements
// are not prepared ahead.

const sessionCols = `token_hash, agent_id, created_at, expires_at, ip, user_agent`

// EnsureSetting implements core.Store: the first value stored under key wins.
func (s *Store) EnsureSetting(ctx context.Context, key, value string) (string, error) {
	if key == "" {
		return "", invalid("empty setting key")
	}
	var stored string
	err := s.do(ctx, func(w *wtx) error {
		if _, err := w.tx.ExecContext(w.ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
			return dbErr(err, "store setting %s", key)
		}
		err := w.tx.QueryRowContext(w.ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&stored)
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
	err := s.r.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if err != nil {
		return "", s.readErr(err, "setting "+key)
	}
	return v, nil
}

// PutSetting implements core.Store.
func (s *Store) PutSetting(ctx context.Context, key, value string) error {
	if key == "" {
		return invalid("empty setting key")
	}
	return s.do(ctx, func(w *wtx) error {
		_, err := w.tx.ExecContext(w.ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return dbErr(err, "store setting %s", key)
	})
}

// MediaUsed implements core.Store.
func (s *Store) MediaUsed(ctx context.Context, key string) (bool, error) {
	if s.isClosed.Load() {
		return false, core.ErrClosed
	}
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM messages WHERE media_key = ? LIMIT 1`, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, s.readErr(err, "messages with media %s", key)
	}
	return true, nil
}

// Settings implements core.Store.
func (s *Store) Settings(ctx context.Context, prefix, after string, limit int) ([]core.Setting, error) {
	if limit < 1 || limit > core.MaxBatchRead {
		return nil, invalid("settings: limit %d (1 to %d)", limit, core.MaxBatchRead)
	}
	// key >= prefix lets the primary key's index start at the prefix.
	return queryList(ctx, s, scanSetting, "settings", `SELECT key, value FROM settings
		WHERE key >= ? AND key > ? AND substr(key, 1, length(?)) = ? ORDER BY key LIMIT ?`,
		prefix, after, prefix, prefix, limit)
}

func scanSetting(r scanner) (core.Setting, error) {
	var kv core.Setting
	err := r.Scan(&kv.Key, &kv.Value)
	return kv, err
}

// ReplaceSetting implements core.Store.
func (s *Store) ReplaceSetting(ctx context.Context, key, old, value string) (bool, error) {
	return s.changeSetting(ctx, key, `UPDATE settings SET value = ? WHERE key = ? AND value = ?`, value, key, old)
}

// DeleteSetting implements core.Store.
func (s *Store) DeleteSetting(ctx context.Context, key, old string) (bool, error) {
	return s.changeSetting(ctx, key, `DELETE FROM settings WHERE key = ? AND value = ?`, key, old)
}

// changeSetting runs a conditional write of key and reports whether it
// changed a row.
func (s *Store) changeSetting(ctx context.Context, key, q string, args ...any) (bool, error) {
	if key == "" {
		return false, invalid("empty setting key")
	}
	var n int64
	err := s.do(ctx, func(w *wtx) error {
		res, err := w.tx.ExecContext(w.ctx, q, args...)
		if err == nil {
			n, err = res.RowsAffected()
		}
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
		_, err := w.tx.ExecContext(w.ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			ss.TokenHash, ss.AgentID, toDB(ss.CreatedAt), toDB(ss.ExpiresAt), ss.IP, ss.UserAgent)
		return dbErr(err, "create session for agent %d", ss.AgentID)
	})
}

// Session implements core.Store.
func (s *Store) Session(ctx context.Context, tokenHash string) (core.Session, error) {
	if s.isClosed.Load() {
		return core.Session{}, core.ErrClosed
	}
	var ss core.Session
	var created, expires int64
	err := s.r.QueryRowContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE token_hash = ?`, tokenHash).
		Scan(&ss.TokenHash, &ss.AgentID, &created, &expires, &ss.IP, &ss.UserAgent)
	if err != nil {
		return core.Session{}, s.readErr(err, "session")
	}
	ss.CreatedAt, ss.ExpiresAt = fromDB(created), fromDB(expires)
	return ss, nil
}

// RevokeSession implements core.Store.
func (s *Store) RevokeSession(ctx context.Context, tokenHash string) error {
	_, err := s.deleteSessions(ctx, `token_hash = ?`, tokenHash)
	return err
}

// RevokeSessions implements core.Store.
func (s *Store) RevokeSessions(ctx context.Context, agentID int64) (int, error) {
	return s.deleteSessions(ctx, `agent_id = ?`, agentID)
}

// DeleteExpiredSessions implements core.Store: sessions whose ExpiresAt is
// before now.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	return s.deleteSessions(ctx, `expires_at < ?`, toDB(now))
}

func (s *Store) deleteSessions(ctx context.Context, where string, arg any) (int, error) {
	var n int64
	err := s.do(ctx, func(w *wtx) error {
		res, err := w.tx.ExecContext(w.ctx, `DELETE FROM sessions WHERE `+where, arg)
		if err != nil {
			return dbErr(err, "delete sessions")
		}
		n, err = res.RowsAffected()
		return dbErr(err, "delete sessions")
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}
