-- Sandbox lifetimes, pause and labels (docs/lifetimes.md): the deadline and what happens at it, the
-- lifetime re-armed on resume, and the metadata map (a JSON object of strings). A paused VM's state
-- is PAUSED; its memory lies in STORAGE_ROOT/vms/<id>/paused/.
ALTER TABLE vms ADD COLUMN expires_at TEXT;
ALTER TABLE vms ADD COLUMN timeout_sec BIGINT;
ALTER TABLE vms ADD COLUMN timeout_action TEXT NOT NULL DEFAULT 'destroy';
ALTER TABLE vms ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
CREATE INDEX vms_expires_at ON vms (expires_at);
