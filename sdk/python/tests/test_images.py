"""Images with small files that pass the manager's format checks (no VM boots from them)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from run_dat_sheesh import Client, ConflictError, NotFoundError, ValidationError


def fake_kernel(n: int = 4096) -> bytes:
    """The start of an x86-64 ELF vmlinux (what crates/manager/tests/api_images.rs uses)."""
    k = bytearray(b"\x07" * n)
    k[:4], k[4], k[5] = b"\x7fELF", 2, 1
    k[18:20] = (62).to_bytes(2, "little")
    return bytes(k)


def fake_rootfs(n: int = 8192) -> bytes:
    r = bytearray(n)
    r[1080], r[1081], r[n // 2] = 0x53, 0xEF, 1
    return bytes(r)


def test_image_lifecycle(client: Client, tmp_path: Path) -> None:
    builtin = next(i for i in client.images.list() if i.built_in)
    img = client.images.create("sdk-test", "made by the Python SDK tests")
    assert not img.has_kernel and img.id in [i.id for i in client.images.list()]
    with pytest.raises(ValidationError, match="Kernel must be an ELF"):
        client.images.upload_kernel(img.id, b"not a kernel")
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(fake_kernel())
    img = client.images.upload_kernel(img.id, kernel)  # from a path: streamed
    assert img.has_kernel and img.kernel_sha256 == hashlib.sha256(kernel.read_bytes()).hexdigest()
    img = client.images.upload_rootfs(img.id, fake_rootfs())
    assert img.has_rootfs and img.rootfs_sha256 == hashlib.sha256(fake_rootfs()).hexdigest()
    cpio = b"070701".ljust(512, b"0")
    assert client.images.upload_initrd(img.id, cpio).has_initrd
    client.images.delete_initrd(img.id)
    assert not client.images.get(img.id).has_initrd
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("img/vmlinux", fake_kernel(8192))
    img = client.images.upload_bundle(img.id, buf.getvalue())
    assert img.kernel_sha256 == hashlib.sha256(fake_kernel(8192)).hexdigest()
    try:
        client.images.set_default(img.id)
        assert client.images.get(img.id).is_default
    finally:
        client.images.set_default(builtin.id)
    assert client.images.get(builtin.id).is_default
    with pytest.raises(ConflictError, match="read-only"):
        client.images.upload_kernel(builtin.id, fake_kernel())
    client.images.delete(img.id)
    with pytest.raises(NotFoundError):
        client.images.get(img.id)
