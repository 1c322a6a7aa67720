"""Load a whitelist file, or refuse it with every problem as ``PATH:LINE: field.path: message``.

The reading, line tracing and duplicate-key refusal are ``reviewed.load_reviewed``'s, the
loader of every file a person writes; this adds the whitelist's cross-field checks, its
error type and its content hash.

The content hash is the SHA-256 of the file's bytes. Any edit, a comment included,
changes it; that is deliberate, so ``sha256sum whitelist.yaml`` on the reviewed commit
names the same file an incident's history records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .models import Whitelist, aws_problems, consistency_problems, escalation_problems
from .reviewed import Problem, Refusal, ReviewedFileError, load_reviewed, read_reviewed

__all__ = ["LoadedWhitelist", "Problem", "WhitelistError", "load_whitelist", "load_whitelist_bytes"]
CHECKS = (consistency_problems, escalation_problems, aws_problems)


class WhitelistError(Refusal, Exception):
    """The file was refused; ``problems`` lists every reason, each with its line.

    Not a ValueError, as before the shared loader: callers tell a bad whitelist apart."""


@dataclass(frozen=True)
class LoadedWhitelist:
    whitelist: Whitelist
    path: str
    sha256: str

    def get(self) -> "LoadedWhitelist":
        """Itself: reads like the worker's ``CurrentWhitelist``, whose ``get`` is one consistent read."""
        return self


def load_whitelist(path: str | Path) -> LoadedWhitelist:
    try:
        data = read_reviewed(path)
    except ReviewedFileError as exc:
        raise WhitelistError(exc.path, exc.problems) from None
    return load_whitelist_bytes(data, str(path))


def load_whitelist_bytes(data: bytes, path: str = "<whitelist>") -> LoadedWhitelist:
    try:
        whitelist = load_reviewed(data, Whitelist, path=path, what="the whitelist format", checks=CHECKS)
    except ReviewedFileError as exc:
        raise WhitelistError(exc.path, exc.problems) from None
    return LoadedWhitelist(whitelist, path, hashlib.sha256(data).hexdigest())
