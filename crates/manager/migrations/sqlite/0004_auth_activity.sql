-- Admin sessions, DB API keys and activity events (docs/reference/lifecycle.md §12,
-- docs/reference/security.md §3). Sessions are found by the SHA-256 of their cookie value; the
-- cookie value itself is never stored.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    credential_fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- `hash` is an argon2id PHC string; `prefix` (12 hex chars) finds the row before any hashing.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    last_used_at TEXT
);

-- `seq` is the order of recording: event ids are random UUIDs, and timestamps of events recorded in
-- the same millisecond tie, so paging (`before`) and SSE replay (`Last-Event-ID`) go by `seq`.
CREATE TABLE activity_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    type TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT,
    message TEXT NOT NULL,
    meta_json TEXT NOT NULL
);
