"""The PyTorch side of tinystories: model, data, training loop, export, evaluation.

Installed as ``tinystories.training``. Importing this package imports neither
torch nor sentencepiece: :mod:`.config` (the settings), :mod:`.corpus` (fetching),
:mod:`.shards` and :mod:`.vocab` need at most sentencepiece; :mod:`.model`,
:mod:`.loop`, :mod:`.checkpoint` and :mod:`.evaluate` need the ``train`` extra
(``pip install 'tinystories[train]'``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import NoReturn

TRAIN_EXTRA = ("torch", "sentencepiece", "tqdm")
INSTALL_HINT = "pip install 'tinystories[train]'"


def missing_packages(names: tuple[str, ...] = TRAIN_EXTRA) -> list[str]:
    """Which of ``names`` cannot be imported here."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def require(names: tuple[str, ...] = TRAIN_EXTRA, what: str = "training") -> None:
    """Exits with a clear message when the packages ``what`` needs are missing."""
    missing = missing_packages(names)
    if missing:
        raise SystemExit(
            f"tinystories: error: {what} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}"
        )


def exit_process(code: int) -> NoReturn:
    """Ends a training process with ``code``. A torchrun process (``RANK`` set) skips
    the interpreter's shutdown: gloo's worker threads may still be releasing the last
    collectives' tensors, which takes the GIL, and a thread that asks for it during
    shutdown is ended inside a C++ destructor ("terminate called without an active
    exception", SIGABRT, after a finished run: about one run in ten on a loaded 2-core
    machine). The training has closed its files by then; only the streams need a flush."""
    if os.environ.get("RANK") is None:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
