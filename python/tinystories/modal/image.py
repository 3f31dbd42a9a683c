"""The Modal image: Debian slim with the local Python, build tools and torch, then this
project's own wheel built inside the image from the local checkout (copied in with
``copy=True``), so the remote code is exactly the local code and the C engine is compiled
for the remote machine."""

from __future__ import annotations

from pathlib import Path

import modal

from .settings import (
    APT_PACKAGES,
    MOUNT,
    REMOTE_SOURCE,
    REMOTE_WHEELS,
    ROOT_ENV,
    SOURCE_ITEMS,
    Settings,
    SourceNotFound,
    is_shipped_source,
)

BUILD_WHEEL = f"python -m pip wheel --no-deps --wheel-dir {REMOTE_WHEELS} {REMOTE_SOURCE}"
INSTALL_WHEEL = f'python -m pip install "$(ls {REMOTE_WHEELS}/tinystories-*.whl)[train,server]"'
CHECK_WHEEL = "python -c 'import tinystories, tinystories._core; print(tinystories.__file__)'"


def _ignore_outside_sources(path: Path) -> bool:
    """add_local_dir's filter (``path`` relative to the checkout): only SOURCE_ITEMS go in."""
    parts = path.parts
    return (
        not parts
        or parts[0] not in SOURCE_ITEMS
        or "__pycache__" in parts
        or path.suffix in (".pyc", ".so", ".o")
    )


def build_image(settings: Settings) -> tuple[modal.Image, list[str]]:
    """The image and a line per step. Lazy: nothing is uploaded or built until a run."""
    if settings.source is None:
        raise SourceNotFound("Settings.source is not set (see find_source)")
    source = Path(settings.source)
    steps = [f"Debian slim with Python {settings.python_version} (the local version)"]
    image = modal.Image.debian_slim(python_version=settings.python_version)
    steps.append(
        f"apt-get install {' '.join(APT_PACKAGES)} (compilers for the C engine, torch.compile)"
    )
    image = image.apt_install(*APT_PACKAGES)
    steps.append(f"pip install {settings.torch} (CUDA build)")
    image = image.pip_install(settings.torch)
    origin = (
        "the sources shipped in the installed wheel"
        if is_shipped_source(source)
        else ("a checkout")
    )
    steps.append(f"copy {source} ({origin}: {', '.join(SOURCE_ITEMS)}) to {REMOTE_SOURCE}")
    image = image.add_local_dir(source, REMOTE_SOURCE, copy=True, ignore=_ignore_outside_sources)
    steps.append(f"build this project's wheel: {BUILD_WHEEL}")
    steps.append(f"install it with the train and server extras: {INSTALL_WHEEL}")
    image = image.run_commands(BUILD_WHEEL, INSTALL_WHEEL, CHECK_WHEEL)
    steps.append(f"{ROOT_ENV}={MOUNT}")
    image = image.env({ROOT_ENV: MOUNT})
    return image, steps
