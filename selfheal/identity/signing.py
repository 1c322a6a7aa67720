"""Which SSH key the CLI signs with: the one named, else the agent's, else the usual file."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from selfheal.identity.attest import Unproven

DEFAULT_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_rsa")


def signing_key(explicit: str | None, otherwise: str = "") -> str:
    """A path ``ssh-keygen -Y sign -f`` accepts: a private key file, or a public key file
    whose private half the ssh-agent holds. ``otherwise``: what the command can do without
    a key, said when there is none (each command has its own way, or none)."""
    if explicit:
        if not Path(explicit).exists():
            raise Unproven(f"--key {explicit}: no such file")
        return explicit
    if os.environ.get("SSH_AUTH_SOCK"):
        listed = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=30)
        keys = [line for line in listed.stdout.splitlines() if line.startswith(("ssh-ed25519 ", "ssh-rsa "))]
        if listed.returncode == 0 and keys:
            handle = tempfile.NamedTemporaryFile("w", suffix=".pub", prefix="selfheal-agent-", delete=False)
            with handle:
                handle.write(keys[0] + "\n")
            return handle.name
    for candidate in DEFAULT_FILES:
        path = Path(candidate).expanduser()
        if path.exists():
            return str(path)
    raise Unproven("no SSH key to sign with: pass --key FILE or load one into ssh-agent"
                   + (f", or {otherwise}" if otherwise else ""))
