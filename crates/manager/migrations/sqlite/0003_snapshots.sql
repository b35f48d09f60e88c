-- Snapshots (vm-lifecycle.md §8, §12): one row per directory STORAGE_ROOT/snapshots/<id>/, whose
-- meta.json holds the same fields. Digests are null when the image had none recorded at capture.
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    image_id TEXT NOT NULL,
    source_vm_id TEXT,
    base_seed_snapshot_id TEXT,
    cpu BIGINT NOT NULL,
    mem_mb BIGINT NOT NULL,
    disk_size_mb BIGINT NOT NULL,
    has_memory BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    backend TEXT NOT NULL,
    vmm_version TEXT NOT NULL,
    agent_port BIGINT NOT NULL,
    kernel_sha256 TEXT,
    initrd_sha256 TEXT,
    rootfs_sha256 TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX snapshots_image ON snapshots (image_id);
