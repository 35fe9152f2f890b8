package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kefuhq/kefu/core"
)

// SQLiteSchemaVersion is the schema version of adapters/store/sqlite that
// ImportSQLite reads. A source at another version is refused: open it once
// with the kefu that matches this one (which migrates it) first.
const SQLiteSchemaVersion = 7

// ImportOptions configures ImportSQLite.
type ImportOptions struct {
	// Force replaces what the target holds. Without it, a target that holds
	// any row is refused (core.ErrConflict).
	Force bool
}

// TableCount is how many rows ImportSQLite copied into one table.
type TableCount struct {
	Table string
	Rows  int64
}

// importTable says how to copy one table: its columns (the same names on
// both sides), which of them are times (SQLite: unix microseconds, 0 for
// none) or booleans (SQLite: 0 or 1), and whether it has an identity
// column to move past the copied IDs.
type importTable struct {
	name     string
	cols     []string
	order    string
	times    []string
	bools    []string
	identity bool
}

// importTables are kefu's tables in an order that satisfies their foreign
// keys. Leases are not copied: they name the nodes that ran the source.
var importTables = []importTable{
	{name: "contacts", cols: []string{"id", "name", "created_at"}, order: "id",
		times: []string{"created_at"}, identity: true},
	{name: "identities", cols: []string{"channel", "external_id", "contact_id"}, order: "channel, external_id"},
	{name: "agents", cols: []string{"id", "email", "name", "role", "password_hash", "active", "wecom_userid",
		"slack_user", "created_at"}, order: "id", times: []string{"created_at"}, bools: []string{"active"},
		identity: true},
	{name: "conversations", cols: []string{"id", "contact_id", "channel", "external_id", "status", "assignee_id",
		"last_seq", "last_inbound_at", "queued_at", "created_at", "updated_at", "resolved_at"}, order: "id",
		times: []string{"last_inbound_at", "queued_at", "created_at", "updated_at", "resolved_at"}, identity: true},
	{name: "messages", cols: []string{"id", "conversation_id", "seq", "sender_kind", "sender_id", "visibility",
		"kind", "text", "media_key", "media_name", "media_type", "media_size", "media_preview", "event_type",
		"event_agent_id", "event_from_id", "event_by_id", "status", "fail_reason", "dedup_key", "external_id",
		"resend_of", "created_at"}, order: "id", times: []string{"created_at"}, identity: true},
	{name: "outbox", cols: []string{"id", "channel", "key", "message_id", "payload", "attempts", "next_attempt_at",
		"last_error", "created_at"}, order: "id", times: []string{"next_attempt_at", "created_at"}, identity: true},
	{name: "settings", cols: []string{"key", "value"}, order: "key"},
	{name: "sessions", cols: []string{"token_hash", "agent_id", "created_at", "expires_at", "ip", "user_agent"},
		order: "token_hash", times: []string{"created_at", "expires_at"}},
	{name: "devices", cols: []string{"token", "owner", "topic", "environment", "created_at", "updated_at"},
		order: "token", times: []string{"created_at", "updated_at"}},
}

// ImportSQLite copies every row of a kefu SQLite database (src, opened with
// the "sqlite" driver of modernc.org/sqlite, at SQLiteSchemaVersion) into
// dst, keeping every ID and sequence number, so that a deployment that
// outgrows one machine keeps its history: conversation numbers, agents'
// feed cursors, dedup keys, sessions and undelivered outbox entries all
// carry over.
//
// It reads src in one read transaction (a consistent snapshot) and writes
// dst in one transaction, table by table with COPY, streaming the rows: a
// failure leaves dst as it was, and running it again is safe. The
// transaction holds dst's write lock, so kefu nodes already running on dst
// wait for it rather than write in between. Afterwards dst's identity
// sequences continue after the highest copied IDs.
func ImportSQLite(ctx context.Context, src *sql.DB, dst *Store, o ImportOptions) ([]TableCount, error) {
	if dst.isClosed.Load() {
		return nil, core.ErrClosed
	}
	stx, err := src.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("postgres: import: read source: %w", err)
	}
	defer func() { _ = stx.Rollback() }()
	var version int64
	if err := stx.QueryRowContext(ctx, `SELECT max(version_id) FROM goose_db_version WHERE is_applied`).
		Scan(&version); err != nil {
		return nil, fmt.Errorf("postgres: import: source is not a kefu SQLite database: %w", err)
	}
	if version != SQLiteSchemaVersion {
		return nil, fmt.Errorf("postgres: import: %w: source schema version %d, this kefu reads %d "+
			"(open the source with the matching kefu first)", core.ErrInvalid, version, SQLiteSchemaVersion)
	}

	conn, err := dst.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: import: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: import: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM write_lock FOR UPDATE`); err != nil {
		return nil, fmt.Errorf("postgres: import: write lock: %w", err)
	}
	var checks []string
	var names []string
	for _, t := range importTables {
		checks = append(checks, `EXISTS (SELECT 1 FROM `+t.name+`)`)
		names = append(names, t.name)
	}
	var nonEmpty bool
	if err := tx.QueryRow(ctx, `SELECT `+strings.Join(checks, " OR ")).Scan(&nonEmpty); err != nil {
		return nil, fmt.Errorf("postgres: import: %w", err)
	}
	if nonEmpty {
		if !o.Force {
			return nil, fmt.Errorf("postgres: import: %w: the target database already holds data "+
				"(ImportOptions.Force replaces it)", core.ErrConflict)
		}
		if _, err := tx.Exec(ctx, `TRUNCATE `+strings.Join(names, ", ")+` RESTART IDENTITY`); err != nil {
			return nil, fmt.Errorf("postgres: import: empty the target: %w", err)
		}
	}

	var counts []TableCount
	for _, t := range importTables {
		n, err := copyTable(ctx, stx, tx, t)
		if err != nil {
			return nil, fmt.Errorf("postgres: import %s: %w", t.name, err)
		}
		counts = append(counts, TableCount{Table: t.name, Rows: n})
		if t.identity {
			if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('`+t.name+`', 'id'),
				COALESCE((SELECT max(id) FROM `+t.name+`), 0) + 1, false)`); err != nil {
				return nil, fmt.Errorf("postgres: import %s: reset its ids: %w", t.name, err)
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("postgres: import: commit: %w", err)
	}
	return counts, nil
}

// copyTable streams one table from the SQLite transaction into the
// PostgreSQL one with COPY.
func copyTable(ctx context.Context, src *sql.Tx, dst pgx.Tx, t importTable) (int64, error) {
	rows, err := src.QueryContext(ctx, `SELECT `+strings.Join(t.cols, ", ")+` FROM `+t.name+` ORDER BY `+t.order)
	if err != nil {
		return 0, err
	}
	defer func() { _ = rows.Close() }()
	kind := make([]byte, len(t.cols)) // 't': time, 'b': boolean
	for i, c := range t.cols {
		for _, tc := range t.times {
			if c == tc {
				kind[i] = 't'
			}
		}
		for _, bc := range t.bools {
			if c == bc {
				kind[i] = 'b'
			}
		}
	}
	vals := make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var convErr error
	source := pgx.CopyFromFunc(func() ([]any, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out := make([]any, len(vals))
		for i, v := range vals {
			switch kind[i] {
			case 't':
				us, ok := v.(int64)
				if !ok && v != nil {
					convErr = fmt.Errorf("column %s: time %v (%T) is not unix microseconds", t.cols[i], v, v)
					return nil, convErr
				}
				out[i] = ts(fromMicros(us))
			case 'b':
				n, _ := v.(int64)
				out[i] = n != 0
			default:
				out[i] = v
			}
		}
		return out, nil
	})
	n, err := dst.CopyFrom(ctx, pgx.Identifier{t.name}, t.cols, source)
	if err != nil {
		return n, errors.Join(err, convErr)
	}
	return n, nil
}
