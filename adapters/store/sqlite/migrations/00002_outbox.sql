-- The outbox: committed outbound work per channel instance. Entries with the
-- same (channel, key) are delivered in id order.

-- +goose Up
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    message_id      INTEGER REFERENCES messages (id), -- NULL: the entry carries a payload
    payload         BLOB,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX outbox_key ON outbox (channel, key, id);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- +goose Down
DROP TABLE outbox;
