-- Postgres twin of migrations/sqlite/0001_init.sql: the same tables, columns and types (TEXT, BIGINT;
-- flags are BIGINT 0/1, timestamps fixed-width RFC 3339 TEXT, so the Any driver reads both alike).
-- The one difference: ids and timestamps that queries sort by are COLLATE "C", so Postgres orders
-- them byte-wise like SQLite does, whatever the database's locale.

CREATE TABLE guest_images (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    built_in BIGINT NOT NULL DEFAULT 0,
    kernel_path TEXT,
    initrd_path TEXT,
    rootfs_path TEXT,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE vms (
    id TEXT COLLATE "C" PRIMARY KEY,
    state TEXT NOT NULL,
    cpu BIGINT NOT NULL,
    mem_mb BIGINT NOT NULL,
    disk_size_mb BIGINT NOT NULL,
    guest_ip TEXT NOT NULL,
    tap_name TEXT NOT NULL,
    mac TEXT NOT NULL,
    vsock_cid BIGINT NOT NULL,
    outbound_internet BIGINT NOT NULL,
    allow_ips TEXT NOT NULL,
    image_id TEXT NOT NULL,
    source_snapshot_id TEXT,
    provision_mode TEXT,
    pool_role TEXT,
    vmm_pid BIGINT,
    vmm_start_time BIGINT,
    vmm_boot_id TEXT,
    backend TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX vms_state ON vms (state);

-- One row per address held by a non-deleted VM; the primary key makes allocation unique.
CREATE TABLE ip_allocations (
    ip TEXT PRIMARY KEY,
    vm_id TEXT NOT NULL,
    allocated_at TEXT NOT NULL
);
