"""``python -m tinystories.eval``: :mod:`tinystories.cli.eval`."""

from .cli.eval import main

if __name__ == "__main__":
    raise SystemExit(main())
