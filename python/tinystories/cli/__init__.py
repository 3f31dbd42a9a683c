"""The command line: :func:`main` (``tinystories``, ``python -m tinystories``) dispatches
to one module per subcommand; each ``python -m tinystories.X`` runs ``cli.X.main``."""

from .dispatch import main

__all__ = ["main"]
