-- Image files and their metadata (api.md §5), the template fields (null until templates exist), and a
-- digest cache for the built-in image's source files (vm-lifecycle.md §9), keyed by path, size, mtime.
ALTER TABLE guest_images ADD COLUMN kernel_format TEXT;
ALTER TABLE guest_images ADD COLUMN kernel_sha256 TEXT;
ALTER TABLE guest_images ADD COLUMN kernel_bytes BIGINT;
ALTER TABLE guest_images ADD COLUMN kernel_uploaded_at TEXT;
ALTER TABLE guest_images ADD COLUMN initrd_sha256 TEXT;
ALTER TABLE guest_images ADD COLUMN initrd_bytes BIGINT;
ALTER TABLE guest_images ADD COLUMN initrd_uploaded_at TEXT;
ALTER TABLE guest_images ADD COLUMN rootfs_sha256 TEXT;
ALTER TABLE guest_images ADD COLUMN rootfs_bytes BIGINT;
ALTER TABLE guest_images ADD COLUMN rootfs_uploaded_at TEXT;
ALTER TABLE guest_images ADD COLUMN seed_snapshot_id TEXT;
ALTER TABLE guest_images ADD COLUMN seed_status TEXT;
ALTER TABLE guest_images ADD COLUMN seed_updated_at TEXT;
ALTER TABLE guest_images ADD COLUMN seed_error TEXT;
CREATE INDEX vms_image ON vms (image_id);

CREATE TABLE file_digests (
    path TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    sha256 TEXT NOT NULL
);
