"""``python -m tinystories.train``: :mod:`tinystories.cli.train`."""

from .cli.train import run

if __name__ == "__main__":
    run()
