"""Deprecated: :mod:`tinystories.modal.check`."""

from ._deprecated import moved

moved(__name__, "tinystories.modal.check")

from .modal.check import (  # noqa: E402
    INSTALL_HINT,
    has_credentials,
    missing_credentials_message,
    missing_modal_message,
    require_modal,
)

__all__ = [
    "INSTALL_HINT",
    "has_credentials",
    "missing_credentials_message",
    "missing_modal_message",
    "require_modal",
]
