-- Profiles and notifications (issue 17).

-- A profile's bio: free text shown under the name, at most 300 characters (the
-- web tier checks the same bound, and refuses control characters but newlines).
ALTER TABLE users
    ADD COLUMN bio text NOT NULL DEFAULT '' CHECK (char_length(bio) <= 300);

-- Followers and following lists, newest edge first: one index step per page.
CREATE INDEX follows_in_newest ON follows_in (user_id, created_at DESC, follower_id DESC);
CREATE INDEX follows_out_newest ON follows_out (user_id, created_at DESC, followee_id DESC);

-- What a user is told: someone followed them, liked or commented on their post.
-- Owned by the recipient (`user_id`), on the recipient's shard. Written by a
-- worker running a `notify` job, which the follow edge (followee's side), the
-- like or the comment enqueued in its own statement on that same shard.
--
-- `dedup` names the event deterministically (`follow:<actor>`,
-- `like:<post>:<actor>`, `comment:<comment>`), so a job that runs twice (its
-- worker died after inserting, before completing the job) inserts once: the
-- insert is `ON CONFLICT (user_id, dedup) DO NOTHING`. It also makes an
-- unfollow-and-follow-again, or unlike-and-like-again, notify only once.
--
-- `notification_id` is time-ordered (laid out like a post id, with the
-- recipient's bucket), unique per recipient: what pages are ordered and
-- cursored by.
CREATE TABLE notifications (
    user_id          bigint NOT NULL,  -- the recipient (owner)
    dedup            text NOT NULL,
    notification_id  bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('follow', 'like', 'comment')),
    actor_id         bigint NOT NULL,
    post_id          bigint,
    comment_id       bigint,
    seen             boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, dedup),
    CHECK (actor_id <> user_id),
    CHECK ((kind = 'follow') = (post_id IS NULL)),
    CHECK ((kind = 'comment') = (comment_id IS NOT NULL))
);
-- A page of a recipient's notifications, newest first.
CREATE UNIQUE INDEX notifications_newest ON notifications (user_id, notification_id DESC);
-- The unread count (the top bar's badge), and marking them read.
CREATE INDEX notifications_unseen ON notifications (user_id, notification_id) WHERE NOT seen;

-- Captured while its bucket moves, as every owned table (V5).
CREATE TRIGGER notifications_capture AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW EXECUTE FUNCTION millions_capture('user_id', 'dedup');
