-- Moving buckets between shards while they take writes (ADR 0020).
--
-- A move copies a bucket's rows from its source shard to its target shard, then
-- catches up with what changed meanwhile. The source records those changes: while
-- a bucket is listed in `bucket_moves`, every row written in it on this shard
-- leaves its table and key in `bucket_changes`. For the cutover the bucket is
-- fenced: a write to it is refused with SQLSTATE MB001, which the data layer
-- retries against the bucket's new shard once the controller has published it.

-- The bucket of a user id, exactly as `sharding::user_bucket` computes it:
-- MurmurHash3's fmix64 of the id as an unsigned 64-bit number, modulo 4096. The
-- arithmetic is done in numeric (bigint multiplication would overflow); each
-- `k ^= k >> 33` only changes the 31 low bits, so the XOR is done on them alone.
CREATE FUNCTION millions_bucket(id bigint) RETURNS integer
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    two64 CONSTANT numeric := 18446744073709551616;
    two33 CONSTANT numeric := 8589934592;
    two31 CONSTANT numeric := 2147483648;
    k numeric := CASE WHEN id < 0 THEN id::numeric + two64 ELSE id::numeric END;
    low numeric;
BEGIN
    low := mod(k, two31);
    k := k - low + ((low::bigint) # (div(k, two33)::bigint));
    k := mod(k * 18397679294719823053, two64);
    low := mod(k, two31);
    k := k - low + ((low::bigint) # (div(k, two33)::bigint));
    k := mod(k * 14181476777654086739, two64);
    low := mod(k, two31);
    k := k - low + ((low::bigint) # (div(k, two33)::bigint));
    RETURN mod(k, 4096)::integer;
END $$;

-- The buckets this shard is giving away or gave away: whether each is fenced
-- (writes refused) for its cutover, and whether it is gone (its rows deleted
-- here after the move; writes stay refused, so that a process still holding an
-- old map can never write a row where no one reads it). Empty until a bucket
-- moves away; a gone bucket's row is deleted when the bucket moves back.
CREATE TABLE bucket_moves (
    bucket  integer PRIMARY KEY CHECK (bucket >= 0 AND bucket < 4096),
    move_id bigint NOT NULL,
    fenced  boolean NOT NULL DEFAULT false,
    gone    boolean NOT NULL DEFAULT false
);

-- The keys of the rows written in a moving bucket since its move began, in
-- order; the mover copies each key's current row (or its absence) again.
CREATE TABLE bucket_changes (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    move_id bigint NOT NULL,
    tbl     text NOT NULL,
    key     jsonb NOT NULL
);

-- Runs after every row written to an owned table. Costs one look at the empty
-- `bucket_moves` while no bucket ever left this shard, one index look-up of the
-- row's bucket after. The mover's own statements set `millions.mover` and pass
-- through.
CREATE FUNCTION millions_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    m record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM bucket_moves) THEN
        RETURN NULL;
    END IF;
    IF current_setting('millions.mover', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    SELECT move_id, fenced OR gone AS fenced INTO m FROM bucket_moves WHERE bucket = millions_bucket(r.user_id);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF m.fenced THEN
        RAISE EXCEPTION 'bucket % is moving or moved to another shard', millions_bucket(r.user_id)
            USING ERRCODE = 'MB001';
    END IF;
    IF TG_TABLE_NAME <> 'jobs' THEN
        INSERT INTO bucket_changes (move_id, tbl, key)
        VALUES (m.move_id, TG_TABLE_NAME, jsonb_build_object(TG_ARGV[0], to_jsonb(r) -> TG_ARGV[0])
            || CASE WHEN TG_NARGS > 1 THEN jsonb_build_object(TG_ARGV[1], to_jsonb(r) -> TG_ARGV[1])
                    ELSE '{}'::jsonb END);
    END IF;
    RETURN NULL;
END $$;

-- The trigger's arguments name the table's primary key columns.
CREATE TRIGGER users_capture AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION millions_capture('user_id');
CREATE TRIGGER follows_out_capture AFTER INSERT OR UPDATE OR DELETE ON follows_out
    FOR EACH ROW EXECUTE FUNCTION millions_capture('user_id', 'followee_id');
CREATE TRIGGER follows_in_capture AFTER INSERT OR UPDATE OR DELETE ON follows_in
    FOR EACH ROW EXECUTE FUNCTION millions_capture('user_id', 'follower_id');
CREATE TRIGGER posts_capture AFTER INSERT OR UPDATE OR DELETE ON posts
    FOR EACH ROW EXECUTE FUNCTION millions_capture('post_id');
CREATE TRIGGER likes_capture AFTER INSERT OR UPDATE OR DELETE ON likes
    FOR EACH ROW EXECUTE FUNCTION millions_capture('post_id', 'liker_id');
CREATE TRIGGER sessions_capture AFTER INSERT OR UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION millions_capture('token_hash');
-- Jobs are fenced but not captured: they move at the cutover, under new ids.
CREATE TRIGGER jobs_capture AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION millions_capture('job_id');

-- On a move's target: the moves whose queued jobs were brought over (under new
-- ids, in the same transaction as this row), so that a resumed cutover does not
-- bring them twice.
CREATE TABLE bucket_moves_done (
    move_id bigint PRIMARY KEY,
    jobs    bigint NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
