-- Settings kefu generates once and keeps (secrets), and agents' login
-- sessions, of which only a hash of the token is stored.

-- +goose Up
CREATE TABLE settings (
    key   text NOT NULL PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE sessions (
    token_hash text   NOT NULL PRIMARY KEY,
    agent_id   bigint NOT NULL REFERENCES agents (id),
    created_at timestamptz,
    expires_at timestamptz NOT NULL,
    ip         text   NOT NULL DEFAULT '',
    user_agent text   NOT NULL DEFAULT ''
);

CREATE INDEX sessions_agent   ON sessions (agent_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- +goose Down
DROP TABLE sessions;
DROP TABLE settings;
