"""Finding the real programs the tests drive (Debian packages), one way for all of them.

An override variable (``PROMETHEUS_BIN=...``) wins; then ``PATH``; then the Debian path.
A missing program skips its tests, or fails them under ``CI=true`` (``tests.conftest.require``).
"""

from __future__ import annotations

import os
import shutil

from tests.conftest import require
from tests.support.ports import free_port  # noqa: F401 (its users import it from here)


def find_binary(name: str, debian_path: str, env_var: str, package: str) -> tuple[str | None, str | None]:
    """``(path, None)``, or ``(None, why it is missing)``."""
    override = os.environ.get(env_var, "").strip()
    if override:
        path = shutil.which(override) or override
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, None
        return None, f"${env_var}={override!r} is not an executable file"
    path = shutil.which(name) or (debian_path if os.access(debian_path, os.X_OK) else None)
    if path:
        return path, None
    return None, f"{debian_path} missing (apt-get install {package}, or set ${env_var})"


def require_binary(name: str, debian_path: str, env_var: str, package: str) -> str:
    path, problem = find_binary(name, debian_path, env_var, package)
    require(name, problem)
    assert path is not None
    return path


