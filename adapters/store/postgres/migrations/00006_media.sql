-- Media storage in the database (media.driver: postgres): images and files
-- every node can read, whichever node stored them. adapters/media/postgres
-- reads and writes these tables; see its package documentation.
--
-- A blob is one stored version of an object, its bytes in media_parts rows
-- of part_size bytes each (the last one shorter). A blob is 'writing' while
-- its parts arrive, 'live' while media_objects names it, and 'dropped' once
-- replaced or deleted; dropped blobs are kept for a while (readers opened
-- before may still be reading them) and then deleted with their parts, as
-- are 'writing' blobs a crashed upload left behind. changed_at is when the
-- state last changed, on the database's clock.
--
-- media_objects maps a key to its live blob. Its row lock is what orders
-- concurrent writes of one key.

-- +goose Up
CREATE TABLE media_blobs (
    blob       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key        text        NOT NULL,
    state      text        NOT NULL CHECK (state IN ('writing', 'live', 'dropped')),
    size       bigint      NOT NULL DEFAULT 0 CHECK (size >= 0),
    part_size  integer     NOT NULL CHECK (part_size > 0),
    changed_at timestamptz NOT NULL
);

CREATE INDEX media_blobs_live ON media_blobs (key) WHERE state = 'live';
CREATE INDEX media_blobs_sweep ON media_blobs (changed_at) WHERE state <> 'live';

CREATE TABLE media_parts (
    blob bigint  NOT NULL REFERENCES media_blobs (blob) ON DELETE CASCADE,
    part integer NOT NULL CHECK (part >= 0),
    data bytea   NOT NULL,
    PRIMARY KEY (blob, part)
);

-- Images, audio and video are compressed already: store parts out of line
-- without trying to compress them again.
ALTER TABLE media_parts ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE media_objects (
    key  text   NOT NULL PRIMARY KEY,
    blob bigint NOT NULL UNIQUE REFERENCES media_blobs (blob)
);

-- +goose Down
DROP TABLE media_objects;
DROP TABLE media_parts;
DROP TABLE media_blobs;
