"""Typed views of the manager's JSON answers. Each keeps the full answer in `raw`, since later
releases add fields and clients must not lose them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

Json = Dict[str, Any]


@dataclass(frozen=True)
class PeerLink:
    """A link of a consumer VM to a provider VM (docs/peers.md): the provider's functions appear under
    /workspace/peers/<alias> in the consumer. `source_mode` is 'hidden' (the default) or 'mounted'
    (also a copy of the provider's sources)."""

    alias: str
    vm_id: str
    source_mode: str = "hidden"

    @classmethod
    def from_json(cls, j: Json) -> "PeerLink":
        return cls(alias=j["alias"], vm_id=j["vmId"], source_mode=j.get("sourceMode") or "hidden")

    def to_json(self) -> Json:
        return {"alias": self.alias, "vmId": self.vm_id, "sourceMode": self.source_mode}


@dataclass(frozen=True)
class VM:
    id: str
    state: str
    cpu: int
    mem_mb: int
    disk_size_mb: Optional[int]
    guest_ip: Optional[str]
    image_id: Optional[str]
    outbound_internet: bool
    allow_ips: List[str]
    provision_mode: Optional[str]
    source_snapshot_id: Optional[str]
    created_at: str
    last_error: Optional[str]
    expires_at: Optional[str]
    timeout_action: Optional[str]
    metadata: Dict[str, str]
    peer_links: List[PeerLink]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: Json) -> "VM":
        return cls(
            id=j["id"],
            state=j["state"],
            cpu=j.get("cpu", 0),
            mem_mb=j.get("memMb", 0),
            disk_size_mb=j.get("diskSizeMb"),
            guest_ip=j.get("guestIp"),
            image_id=j.get("imageId"),
            outbound_internet=bool(j.get("outboundInternet", False)),
            allow_ips=list(j.get("allowIps") or []),
            provision_mode=j.get("provisionMode"),
            source_snapshot_id=j.get("sourceSnapshotId"),
            created_at=j.get("createdAt", ""),
            last_error=j.get("lastError"),
            expires_at=j.get("expiresAt"),
            timeout_action=j.get("timeoutAction"),
            metadata=dict(j.get("metadata") or {}),
            peer_links=[PeerLink.from_json(p) for p in j.get("peerLinks") or []],
            raw=j,
        )


@dataclass(frozen=True)
class ExecResult:
    """Outcome of exec, run-ts or run-js. `result`/`error` are set only by run-ts and run-js."""

    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_ms: Optional[int]
    has_result: bool
    result: Any
    error: Any
    raw: Json = field(repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_json(cls, j: Json) -> "ExecResult":
        return cls(
            exit_code=j["exitCode"],
            stdout=j.get("stdout", ""),
            stderr=j.get("stderr", ""),
            stdout_truncated=bool(j.get("stdoutTruncated", False)),
            stderr_truncated=bool(j.get("stderrTruncated", False)),
            timed_out=bool(j.get("timedOut", False)),
            duration_ms=j.get("durationMs"),
            has_result="result" in j,
            result=j.get("result"),
            error=j.get("error"),
            raw=j,
        )


@dataclass(frozen=True)
class Logs:
    type: str
    lines: List[str]
    truncated: bool
    updated_at: Optional[str]

    @classmethod
    def from_json(cls, j: Json) -> "Logs":
        return cls(j["type"], list(j.get("lines") or []), bool(j.get("truncated")), j.get("updatedAt"))


@dataclass(frozen=True)
class ExecLogEntry:
    id: str
    timestamp: str
    type: str
    input: Json
    result: Optional[Json]
    duration_ms: Optional[int]

    @classmethod
    def from_json(cls, j: Json) -> "ExecLogEntry":
        return cls(j["id"], j.get("timestamp", ""), j["type"], j.get("input") or {}, j.get("result"), j.get("durationMs"))


@dataclass(frozen=True)
class ExecLogPage:
    entries: List[ExecLogEntry]
    has_more: bool

    @classmethod
    def from_json(cls, j: Json) -> "ExecLogPage":
        return cls([ExecLogEntry.from_json(e) for e in j.get("entries") or []], bool(j.get("hasMore")))


@dataclass(frozen=True)
class Snapshot:
    id: str
    kind: str
    created_at: str
    source_vm_id: Optional[str]
    image_id: Optional[str]
    cpu: Optional[int]
    mem_mb: Optional[int]
    disk_size_mb: Optional[int]
    has_memory: bool
    size_bytes: Optional[int]
    backend: Optional[str]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: Json) -> "Snapshot":
        return cls(
            id=j["id"],
            kind=j.get("kind", ""),
            created_at=j.get("createdAt", ""),
            source_vm_id=j.get("sourceVmId"),
            image_id=j.get("imageId"),
            cpu=j.get("cpu"),
            mem_mb=j.get("memMb"),
            disk_size_mb=j.get("diskSizeMb"),
            has_memory=bool(j.get("hasMemory", False)),
            size_bytes=j.get("sizeBytes"),
            backend=j.get("backend"),
            raw=j,
        )


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    description: str
    created_at: str
    built_in: bool
    is_default: bool
    has_kernel: bool
    has_rootfs: bool
    has_initrd: bool
    kernel_format: Optional[str]
    kernel_sha256: Optional[str]
    rootfs_sha256: Optional[str]
    initrd_sha256: Optional[str]
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: Json) -> "Image":
        return cls(
            id=j["id"],
            name=j.get("name", ""),
            description=j.get("description", ""),
            created_at=j.get("createdAt", ""),
            built_in=bool(j.get("builtIn", False)),
            is_default=bool(j.get("isDefault", False)),
            has_kernel=bool(j.get("hasKernel", False)),
            has_rootfs=bool(j.get("hasRootfs", False)),
            has_initrd=bool(j.get("hasInitrd", False)),
            kernel_format=j.get("kernelFormat"),
            kernel_sha256=j.get("kernelSha256"),
            rootfs_sha256=j.get("rootfsSha256"),
            initrd_sha256=j.get("initrdSha256"),
            raw=j,
        )
