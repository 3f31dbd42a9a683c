"""``python -m tinystories.train``: :mod:`tinystories.cli.train`."""

from .cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
