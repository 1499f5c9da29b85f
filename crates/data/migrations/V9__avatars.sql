-- A profile's photo (issue 17): uploaded through the same validation and
-- thumbnail pipeline as a photo post. The normalized original is stored at once;
-- an `avatar` job makes the thumbnails. `NULL`: none (the page shows an initial).
ALTER TABLE users ADD COLUMN avatar jsonb;

-- Whether a stored object is still named by an avatar (a replaced avatar's, or a
-- deleted post's, objects are removed once nothing names them): a containment
-- query on every shard, as for posts' photos (V6).
CREATE INDEX users_avatar_keys ON users USING gin (avatar jsonb_path_ops);
