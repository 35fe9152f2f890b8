-- Cluster leases: work that must run on one node at a time (an outbox's
-- delivery, a channel's polling loop, a follower) runs while its node holds
-- the lease of that name (see core.Store's AcquireLease).
--
-- holder is the node (node_id); acquired_at is when the current holder took
-- the lease (renewals keep it); expires_at is when it lapses unless renewed.
-- Both come from the database's clock (clock_timestamp()), never a node's,
-- so that nodes whose clocks disagree still agree on who holds what.
-- `SELECT * FROM leases` shows which node runs what.

-- +goose Up
CREATE TABLE leases (
    name        text        NOT NULL PRIMARY KEY,
    holder      text        NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- +goose Down
DROP TABLE leases;
