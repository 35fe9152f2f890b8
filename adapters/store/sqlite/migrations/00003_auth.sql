-- Settings kefu generates once and keeps (secrets), and agents' login
-- sessions, of which only a hash of the token is stored.

-- +goose Up
CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    agent_id   INTEGER NOT NULL REFERENCES agents (id),
    created_at INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    ip         TEXT    NOT NULL DEFAULT '',
    user_agent TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE INDEX sessions_agent   ON sessions (agent_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- +goose Down
DROP TABLE sessions;
DROP TABLE settings;
