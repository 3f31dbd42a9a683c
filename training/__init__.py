"""The PyTorch side of tinystories: model, data, training loop, export, evaluation.

Installed as ``tinystories.training``. Importing this package imports neither
torch nor sentencepiece: :mod:`.config` (the settings), :mod:`.corpus` (fetching),
:mod:`.shards` and :mod:`.vocab` need at most sentencepiece; :mod:`.model`,
:mod:`.loop`, :mod:`.checkpoint` and :mod:`.evaluate` need the ``train`` extra
(``pip install 'tinystories[train]'``).
"""

from __future__ import annotations

import importlib.util

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
