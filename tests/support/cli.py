"""Running the ``tinystories`` command line in a subprocess, as a user would."""

from __future__ import annotations

import subprocess
import sys

COMMAND = [sys.executable, "-m", "tinystories"]


def cli(*words: str, **kwargs) -> subprocess.CompletedProcess:
    """``tinystories WORDS``: its exit status and text output (stdin empty unless given)."""
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([*COMMAND, *words], capture_output=True, text=True, timeout=120, **kwargs)
