"""Deprecated: :mod:`tinystories.hub.download`."""

from ._deprecated import moved

moved(__name__, "tinystories.hub.download")

from .hub.download import DownloadError, download, progress_bar  # noqa: E402

__all__ = ["DownloadError", "download", "progress_bar"]
