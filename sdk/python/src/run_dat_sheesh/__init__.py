"""Python client for run-dat-sheesh, a self-hosted runner of microVM sandboxes.

Sync: `Client`, `Sandbox`; asyncio: `AsyncClient`, `AsyncSandbox`. Errors derive from `RdsError`."""

from .aio import AsyncClient, AsyncSandbox
from .client import Client, Sandbox
from .errors import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    RateLimitError,
    RdsError,
    ServerError,
    ValidationError,
)
from .models import VM, ExecLogEntry, ExecLogPage, ExecResult, Image, Logs, PeerLink, Snapshot

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError", "AsyncClient", "AsyncSandbox", "AuthenticationError", "Client", "ConflictError",
    "ExecLogEntry", "ExecLogPage", "ExecResult", "ForbiddenError", "Image", "Logs", "NotFoundError", "PeerLink",
    "RateLimitError", "RdsError", "Sandbox", "ServerError", "Snapshot", "VM", "ValidationError", "__version__",
]
