"""Running the ``tinystories`` command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMMAND = [sys.executable, "-m", "tinystories"]


def cli(*words: str, **kwargs) -> subprocess.CompletedProcess:
    """``tinystories WORDS``: its exit status and text output (stdin empty unless given)."""
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([*COMMAND, *words], capture_output=True, text=True, timeout=120, **kwargs)


def env_without_modal_credentials(tmp_path: Path) -> dict[str, str]:
    """This environment with no Modal token in it or in a config file (nothing can start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["MODAL_CONFIG_PATH"] = str(tmp_path / "no-modal.toml")
    return env
