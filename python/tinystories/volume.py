"""``python -m tinystories.volume``: :mod:`tinystories.cli.volume`."""

from .cli.volume import main

if __name__ == "__main__":
    raise SystemExit(main())
