-- Postgres twin of migrations/sqlite/0003_snapshots.sql; ids and timestamps sorted on are COLLATE "C".
CREATE TABLE snapshots (
    id TEXT COLLATE "C" PRIMARY KEY,
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
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX snapshots_image ON snapshots (image_id);
