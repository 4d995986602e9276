"""Bearer-token files shared by the benchmark agent and the log sync client: one random token
per file, mode 600, checked for a sane length when read."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ._io import atomic_write_text
from .errors import EdgekitError


def read_token(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"token file {path} does not exist", f"create one with: edgekit agent token {path}")
    token = path.read_text().strip()
    if len(token) < 16:
        raise EdgekitError(f"the token in {path} is too short (under 16 characters)",
                           f"make a new one with: edgekit agent token {path}")
    return token.encode()


def new_token(path: str | Path) -> str:
    token = secrets.token_urlsafe(32)
    atomic_write_text(path, token + "\n")
    os.chmod(path, 0o600)
    return token
