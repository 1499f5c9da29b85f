-- Finding people (issue 17): the user directory's fills read a name prefix's
-- users from each shard with an index range scan, in byte order, at most a
-- bounded number of them (`text_pattern_ops`: the range operators `~>=~`,
-- `~<~` and the order `USING ~<~` whatever the database's collation).
-- Usernames are stored lowercase; display names are matched lowercased.
CREATE INDEX users_username_prefix ON users (username text_pattern_ops);
CREATE INDEX users_display_name_prefix ON users (lower(display_name) text_pattern_ops);

-- The explore page ranks a recent window's photo posts by likes: the window is a
-- range of post ids (time-ordered), and only ready photo posts are indexed.
CREATE INDEX posts_recent_photos ON posts (post_id DESC) WHERE photo IS NOT NULL AND status = 'ready';
