-- Webhooks and their deliveries (docs/reference/api-admin.md, docs/reference/lifecycle.md §12). A
-- delivery row exists per (webhook, event) from the moment the event is recorded; pending rows with
-- next_attempt_at in the past are the work queue, so retries survive a restart.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    event_types TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    status TEXT NOT NULL,
    response_status BIGINT,
    error TEXT,
    next_attempt_at TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at);
