-- Every shard has this schema. Every row carries its owner's user_id, whose
-- bucket decides the shard; nothing here references another shard's rows.

-- A user. `username` is unique per shard, and globally unique because a name
-- always hashes to the same bucket as its owner's id (see the sharding crate).
CREATE TABLE users (
    user_id          bigint PRIMARY KEY,
    username         text NOT NULL UNIQUE,
    display_name     text NOT NULL,
    password_hash    text NOT NULL,
    followers_count  bigint NOT NULL DEFAULT 0 CHECK (followers_count >= 0),
    following_count  bigint NOT NULL DEFAULT 0 CHECK (following_count >= 0),
    posts_count      bigint NOT NULL DEFAULT 0 CHECK (posts_count >= 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_by_followers ON users (followers_count DESC);

-- The follow edge, stored on both sides: on the follower's shard ...
CREATE TABLE follows_out (
    user_id      bigint NOT NULL,  -- the follower (owner)
    followee_id  bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, followee_id)
);

-- ... and on the followee's shard.
CREATE TABLE follows_in (
    user_id      bigint NOT NULL,  -- the followee (owner)
    follower_id  bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, follower_id)
);

-- A post; post_id carries the author's bucket and is time-ordered.
CREATE TABLE posts (
    post_id     bigint PRIMARY KEY,
    user_id     bigint NOT NULL,  -- the author (owner)
    caption     text NOT NULL,
    like_count  bigint NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX posts_by_author ON posts (user_id, post_id DESC);

-- A like lives with the post it is about, so liking is one shard transaction.
CREATE TABLE likes (
    post_id     bigint NOT NULL,
    user_id     bigint NOT NULL,  -- the post's author (owner)
    liker_id    bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (post_id, liker_id)
);
