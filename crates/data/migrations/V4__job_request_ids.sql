-- The request that enqueued a job (its X-Request-Id), so that the worker's lines
-- for the job carry it and one request's whole path — load balancer, web server,
-- worker — can be found in the logs (`millions logs --request ID`). NULL for jobs
-- not made by a request.
ALTER TABLE jobs ADD COLUMN request_id text;
