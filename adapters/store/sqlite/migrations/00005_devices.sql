-- Mobile apps' push tokens (APNs device tokens). The owner is an agent
-- ("agent:ID") or a customer's identity ("identity:CHANNEL:EXTERNAL_ID");
-- see core.DeviceOwner. A token is registered once store-wide. An empty
-- topic or environment means the pusher's configured one.

-- +goose Up
CREATE TABLE devices (
    token       TEXT    NOT NULL PRIMARY KEY,
    owner       TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    environment TEXT    NOT NULL CHECK (environment IN ('', 'production', 'sandbox')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX devices_owner ON devices (owner, updated_at);

-- +goose Down
DROP TABLE devices;
