CREATE TABLE guest_images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    built_in BIGINT NOT NULL DEFAULT 0,
    kernel_path TEXT,
    initrd_path TEXT,
    rootfs_path TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE vms (
    id TEXT PRIMARY KEY,
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
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX vms_state ON vms (state);

-- One row per address held by a non-deleted VM; the primary key makes allocation unique.
CREATE TABLE ip_allocations (
    ip TEXT PRIMARY KEY,
    vm_id TEXT NOT NULL,
    allocated_at TEXT NOT NULL
);
