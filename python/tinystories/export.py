"""``python -m tinystories.export``: :mod:`tinystories.cli.export`."""

from .cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
