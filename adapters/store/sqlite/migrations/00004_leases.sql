-- Cluster leases: work that must run on one node at a time (an outbox's
-- delivery, a channel's polling loop, a follower) runs while its node holds
-- the lease of that name (see core.Store's AcquireLease). One SQLite file
-- serves one node, so here the sole node always gets its leases; the table
-- exists so that both stores keep the same contract.
--
-- holder is the node (node_id); acquired_at is when the current holder took
-- the lease (renewals keep it); expires_at is when it lapses unless renewed.
-- Times are unix microseconds.

-- +goose Up
CREATE TABLE leases (
    name        TEXT    NOT NULL PRIMARY KEY,
    holder      TEXT    NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- +goose Down
DROP TABLE leases;
