-- Finds the messages that carry a stored file (core.Store.MediaUsed): the
-- sweep of unsent uploads deletes a file only when none does.

-- +goose Up
CREATE INDEX messages_media_key ON messages (media_key) WHERE media_key IS NOT NULL;

-- +goose Down
DROP INDEX messages_media_key;
