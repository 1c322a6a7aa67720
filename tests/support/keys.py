"""SSH keys for approvers, made by ssh-keygen the way people make theirs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def keypair(directory: Path, name: str) -> tuple[str, str]:
    """(private key path, public key line) for ``name``, an Ed25519 key without passphrase."""
    path = directory / f"{name}_ed25519"
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(path)],
                       check=True, timeout=30)
    return str(path), (directory / f"{name}_ed25519.pub").read_text().strip()


def people_yaml(keys: dict[str, str], indent: str = "") -> str:
    """A whitelist ``people:`` section listing each person's public key."""
    lines = [f"{indent}people:"]
    for person, public in keys.items():
        lines.append(f"{indent}  {person}: {{ssh_keys: [\"{public}\"]}}")
    return "\n".join(lines) + "\n"
