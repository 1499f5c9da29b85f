-- Photos: a post may carry a photo, processed asynchronously by workers.
ALTER TABLE posts
    ADD COLUMN status text NOT NULL DEFAULT 'ready'
        CHECK (status IN ('processing', 'ready', 'failed')),
    ADD COLUMN photo jsonb;

-- The durable job queue of this shard. A job is enqueued in the same transaction as
-- the row it is about; it lives on its owner's shard. Finished jobs are deleted;
-- jobs that failed too often stay, state 'dead', with their last error.
CREATE TABLE jobs (
    job_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL,
    user_id       bigint NOT NULL,  -- owner
    payload       jsonb NOT NULL,
    state         text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'running', 'dead')),
    attempts      int NOT NULL DEFAULT 0,
    max_attempts  int NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    locked_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'ready';
CREATE INDEX jobs_leased ON jobs (locked_until) WHERE state = 'running';
