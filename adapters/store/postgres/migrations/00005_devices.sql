-- Mobile apps' push tokens (APNs device tokens). The owner is an agent
-- ("agent:ID") or a customer's identity ("identity:CHANNEL:EXTERNAL_ID");
-- see core.DeviceOwner. A token is registered once store-wide. An empty
-- topic or environment means the pusher's configured one.

-- +goose Up
CREATE TABLE devices (
    token       text        NOT NULL PRIMARY KEY,
    owner       text        NOT NULL,
    topic       text        NOT NULL,
    environment text        NOT NULL CHECK (environment IN ('', 'production', 'sandbox')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX devices_owner ON devices (owner, updated_at);

-- +goose Down
DROP TABLE devices;
