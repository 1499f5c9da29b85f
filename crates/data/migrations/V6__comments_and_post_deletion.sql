-- Comments (issue 17, ADR 0024). A comment lives on its commenter's shard, owned by
-- the commenter: the comments of a post that thousands answer spread over every
-- shard instead of piling onto its author's. A post's comments are read from every
-- shard at once through `comments_by_post`.
CREATE TABLE comments (
    comment_id      bigint PRIMARY KEY,  -- time-ordered; carries the commenter's bucket
    user_id         bigint NOT NULL,     -- the commenter (owner)
    post_id         bigint NOT NULL,
    post_author_id  bigint NOT NULL,     -- who, besides the commenter, may delete it
    body            text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 2200),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_by_post ON comments (post_id, comment_id DESC);
CREATE INDEX comments_by_user ON comments (user_id);

-- The post's denormalized comment count, kept on the post's shard.
ALTER TABLE posts ADD COLUMN comment_count bigint NOT NULL DEFAULT 0 CHECK (comment_count >= 0);

-- On the post's shard, beside the count: which comments it holds. A comment is
-- counted by a job written with it on the commenter's shard (and at once by the
-- web server, which then drops the job): counting twice, or uncounting a comment
-- whose deletion's job ran before its creation's, must change nothing. A row with
-- `counted` false is such a deletion's tombstone.
CREATE TABLE comment_counts (
    post_id     bigint NOT NULL,
    comment_id  bigint NOT NULL,
    user_id     bigint NOT NULL,  -- the post's author (owner)
    counted     boolean NOT NULL,
    PRIMARY KEY (post_id, comment_id)
);

CREATE TRIGGER comments_capture AFTER INSERT OR UPDATE OR DELETE ON comments
    FOR EACH ROW EXECUTE FUNCTION millions_capture('comment_id');
CREATE TRIGGER comment_counts_capture AFTER INSERT OR UPDATE OR DELETE ON comment_counts
    FOR EACH ROW EXECUTE FUNCTION millions_capture('post_id', 'comment_id');

-- A deleted post's photo objects are removed once no post refers to them (the
-- store is content-addressed: two posts of the same bytes share their objects).
-- Whether one still does is a containment query on every shard, which this
-- index answers without reading every post.
CREATE INDEX posts_photo_keys ON posts USING gin (photo jsonb_path_ops);
