-- Sessions: the store of record for who is logged in, on the user's shard (so a
-- session survives whatever its shard survives: a node, or a whole data center).
-- Only the SHA-256 of the token is kept, so a copy of the table hands out no live
-- tokens. Caches (Redis, each web server's memory) hold copies that a logout
-- invalidates everywhere.
CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_user ON sessions (user_id);
