-- kefu's core schema: people, conversations, messages and agents.
--
-- Times are INTEGER unix microseconds, 0 for "never" (the zero time.Time).
-- Optional references and keys are NULL when absent, so that UNIQUE and
-- FOREIGN KEY constraints ignore them.

-- +goose Up
CREATE TABLE contacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL DEFAULT 0
);

-- How one channel instance knows a contact.
CREATE TABLE identities (
    channel     TEXT    NOT NULL,
    external_id TEXT    NOT NULL,
    contact_id  INTEGER NOT NULL REFERENCES contacts (id),
    PRIMARY KEY (channel, external_id)
) WITHOUT ROWID;

CREATE INDEX identities_contact ON identities (contact_id);

CREATE TABLE agents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL,
    -- email folded to lower case (Unicode, by the application): the unique key,
    -- so that addresses differing only in case are one agent.
    email_key     TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL DEFAULT '',
    role          TEXT    NOT NULL DEFAULT 'agent',
    password_hash TEXT    NOT NULL DEFAULT '',
    active        INTEGER NOT NULL DEFAULT 0,
    wecom_userid  TEXT    NOT NULL DEFAULT '',
    slack_user    TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE conversations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id      INTEGER NOT NULL REFERENCES contacts (id),
    channel         TEXT    NOT NULL,
    external_id     TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'open', 'resolved')),
    assignee_id     INTEGER REFERENCES agents (id), -- NULL: unassigned
    -- sequence number of the newest message; the next one is last_seq + 1.
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_inbound_at INTEGER NOT NULL DEFAULT 0,
    queued_at       INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL DEFAULT 0,
    resolved_at     INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (channel, external_id) REFERENCES identities (channel, external_id)
);

-- An identity has at most one conversation that is not resolved.
CREATE UNIQUE INDEX conversations_active_identity
    ON conversations (channel, external_id) WHERE status <> 'resolved';
-- The identity's latest conversation, and filtering by channel / external id.
CREATE INDEX conversations_identity ON conversations (channel, external_id, id);
CREATE INDEX conversations_assignee ON conversations (assignee_id, status);
CREATE INDEX conversations_queue    ON conversations (status, queued_at, id);
CREATE INDEX conversations_contact  ON conversations (contact_id, id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT, -- increases in commit order
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL,
    sender_kind     TEXT    NOT NULL,
    sender_id       INTEGER NOT NULL DEFAULT 0,
    visibility      TEXT    NOT NULL CHECK (visibility IN ('public', 'internal')),
    kind            TEXT    NOT NULL,
    text            TEXT    NOT NULL DEFAULT '',
    media_key       TEXT,                              -- NULL: no media
    media_name      TEXT    NOT NULL DEFAULT '',
    media_type      TEXT    NOT NULL DEFAULT '',
    media_size      INTEGER NOT NULL DEFAULT 0,
    media_preview   TEXT    NOT NULL DEFAULT '',       -- storage key of an image's preview
    event_type      TEXT,                              -- NULL: no event
    event_agent_id  INTEGER NOT NULL DEFAULT 0,
    event_from_id   INTEGER NOT NULL DEFAULT 0,
    event_by_id     INTEGER NOT NULL DEFAULT 0,
    status          TEXT    NOT NULL,
    fail_reason     TEXT    NOT NULL DEFAULT '',
    dedup_key       TEXT    UNIQUE,                    -- NULL: no de-duplication
    external_id     TEXT,                              -- the provider's id, once known
    resend_of       INTEGER REFERENCES messages (id),
    created_at      INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX messages_conversation_seq ON messages (conversation_id, seq);
-- Status webhooks find a sent message by the provider's id (and then check
-- the conversation's channel).
CREATE INDEX messages_external_id ON messages (external_id) WHERE external_id IS NOT NULL;

-- +goose Down
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE agents;
DROP TABLE identities;
DROP TABLE contacts;
