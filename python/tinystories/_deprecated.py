"""The one warning of the modules kept at their old paths (see ARCHITECTURE.md)."""

from __future__ import annotations

import warnings


def moved(old: str, new: str) -> None:
    """Warns, from module ``old``'s import, that its contents live in ``new`` now."""
    warnings.warn(
        f"{old} is deprecated and will be removed; import from {new} instead",
        DeprecationWarning,
        stacklevel=3,
    )
