"""Device log store and sync client: durable on the device, shipped at-least-once.

Core dependencies only (sqlite3 from the standard library, numpy); never torch.
"""

from .client import SyncClient, SyncConfig
from .store import LogStore, SamplingPolicy

__all__ = ["LogStore", "SamplingPolicy", "SyncClient", "SyncConfig"]
