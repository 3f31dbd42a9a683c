"""Checks made before anything of Modal is imported: the extra is installed, credentials exist.

The commands that run on Modal (``python -m tinystories.train --modal``,
``python -m tinystories generate --modal``, ``python -m tinystories.volume``) call
:func:`require_modal` first, so a missing package or missing token ends the command with
one paragraph saying what to run, before anything is built, uploaded or started.
"""

from __future__ import annotations

import os

INSTALL_HINT = "pip install 'tinystories[modal]'"


def missing_modal_message(what: str) -> str | None:
    """The message for a missing ``modal`` package, or None when it imports."""
    try:
        import modal  # noqa: F401
    except ImportError:
        return (
            f"tinystories: error: {what} runs on Modal and needs the `modal` package, which is not "
            f"installed. Install the extra with `{INSTALL_HINT}` (from a checkout: "
            "`pip install '.[modal]'`), create a Modal token once with `modal token new`, "
            "and run the command again. Nothing was started."
        )
    return None


def has_credentials() -> bool:
    """True when Modal would find a token: MODAL_TOKEN_ID/SECRET (environment or the active
    profile of ~/.modal.toml, or MODAL_CONFIG_PATH) or a complete set of OAuth variables."""
    from modal.config import config

    if config.get("token_id") and config.get("token_secret"):
        return True
    env = os.environ
    return bool(
        env.get("MODAL_OAUTH_REFRESH_TOKEN")
        and env.get("MODAL_OAUTH_CLIENT_ID")
        and (env.get("MODAL_OAUTH_CLIENT_SECRET") or env.get("MODAL_OAUTH_JWT_KEY"))
    )


def missing_credentials_message(what: str, dry_run: bool = True) -> str | None:
    """The message for missing Modal credentials, or None when there are some; ``dry_run``:
    the command takes --dry-run, which the message then suggests."""
    if has_credentials():
        return None
    from modal.config import user_config_path

    return (
        f"tinystories: error: {what} needs Modal credentials and found none (no MODAL_TOKEN_ID and "
        f"MODAL_TOKEN_SECRET in the environment, no token in {user_config_path}). Run "
        "`modal token new` once (it opens a browser and writes ~/.modal.toml) or set "
        "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, then run the command again"
        + ("; add --dry-run to see the plan without credentials" if dry_run else "")
        + ". Nothing was started."
    )


def require_modal(what: str, credentials: bool = True, dry_run: bool = True) -> None:
    """Exits (status 1, the message on stderr) when the extra or the credentials are missing."""
    message = missing_modal_message(what)
    if message is None and credentials:
        message = missing_credentials_message(what, dry_run)
    if message is not None:
        raise SystemExit(message)
