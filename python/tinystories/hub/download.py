"""HTTP downloads: progress bar, resume of partial files, size check, atomic rename.

The one downloader of the package, used for pretrained models (:mod:`.cache`),
corpora (:mod:`tinystories.training.corpus`) and inside Modal, and the one progress
bar (:func:`progress_bar`). Standard library only (tqdm, when installed, draws the bar).
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

__all__ = ["DownloadError", "ProgressBar", "ProgressLines", "download", "progress_bar"]


class DownloadError(RuntimeError):
    """A download that failed; the message says why (and whether running again resumes)."""


def progress_bar(
    total: int | None, initial: int, desc: str, enabled: bool, unit: str = "B"
) -> ProgressBar:
    """A tqdm bar (in bytes, scaled by 1024, unless ``unit`` says otherwise) when stderr is
    a terminal; plain lines (:class:`ProgressLines`) when it is not, where tqdm's
    carriage-return frames would pile up in a log; a no-op with the same methods when
    disabled. A context manager."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is a nicety; plain lines need nothing
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return ProgressLines(total, initial, desc, unit)
    in_bytes = unit == "B"
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        unit_scale=in_bytes,
        unit_divisor=1024 if in_bytes else 1000,
    )


class ProgressBar(Protocol):
    def update(self, n: int) -> object: ...
    def set_postfix(self, **values: object) -> object: ...
    def close(self) -> object: ...
    def __enter__(self) -> ProgressBar: ...
    def __exit__(self, *exc: object) -> object: ...


class _NoProgress:
    """tqdm's methods doing nothing; the plain-lines bar below shows what it must."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **values: object) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class ProgressLines(_NoProgress):
    """A progress bar as plain lines on stderr: one each time another tenth of ``total``
    is done, and at least every ``PERIOD`` seconds while it moves; with the values of
    ``set_postfix`` (tqdm's methods, so the callers need not care which they have)."""

    PERIOD = 60.0

    def __init__(self, total: int | None, initial: int, desc: str, unit: str):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.postfix = ""
        self._tenth = self._tenths(initial)
        self._shown_at = time.monotonic()

    def _tenths(self, n: int) -> int:
        return 10 * n // self.total if self.total else 0

    def set_postfix(self, **values: object) -> None:
        self.postfix = " ".join(f"{key}={value}" for key, value in values.items())

    def update(self, n: int) -> None:
        self.n += n
        tenth, now = self._tenths(self.n), time.monotonic()
        if tenth > self._tenth or now - self._shown_at >= self.PERIOD:
            self._tenth, self._shown_at = tenth, now
            of = f"/{self.total:,}" if self.total else ""
            line = f"{self.desc}: {self.n:,}{of} {self.unit} {self.postfix}".rstrip()
            print(line, file=sys.stderr, flush=True)


def download(
    url: str,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    timeout: float = 60.0,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Downloads ``url`` to ``dest``, resuming ``dest + '.part'`` if a previous try left one.

    The size is checked against ``expected_size`` when given, else against the
    server's Content-Length / Content-Range total. A short transfer raises
    :class:`DownloadError` and keeps the partial file, so calling again resumes.
    ``check``, when given, is called with the complete ``.part`` file before it is
    renamed to ``dest``; if it raises, the file is deleted and :class:`DownloadError`
    says why. ``dest`` only ever appears complete (the rename is atomic).
    """
    dest = Path(dest)
    if dest.exists() and (expected_size is None or dest.stat().st_size == expected_size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:  # not a prefix of this file
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "tinystories"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have and have == expected_size:  # already complete
            return _finish(url, part, dest, check)
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise DownloadError(f"{url}: {err.reason}") from err
    except OSError as err:  # e.g. a connection reset before the headers
        raise DownloadError(f"{url}: {err}") from err

    with response:
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            start = int(content_range.split()[1].split("-")[0]) if content_range else -1
            if start != have:
                raise DownloadError(f"{url}: asked to resume at {have}, got {content_range!r}")
            total_text = content_range.rsplit("/", 1)[-1]
            total = int(total_text) if total_text.isdigit() else None
            mode = "ab"
        else:  # 200: the server ignored the Range header (or there was none); start over
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            have, mode = 0, "wb"
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url}: server reports {total} bytes, expected {expected_size}")
        total = expected_size if expected_size is not None else total
        with open(part, mode) as out, progress_bar(total, have, dest.name, progress) as bar:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, ValueError) as err:  # connection dropped mid-body
                    raise DownloadError(
                        f"{url}: transfer interrupted after {have} bytes ({err}); "
                        "run again to resume"
                    ) from err
                if not chunk:
                    break
                out.write(chunk)
                have += len(chunk)
                bar.update(len(chunk))
    if total is not None and have != total:
        raise DownloadError(
            f"{url}: got {have} of {total} bytes; the partial file {part} is kept, "
            "run again to resume"
        )
    return _finish(url, part, dest, check)


def _finish(url: str, part: Path, dest: Path, check: Callable[[Path], None] | None) -> Path:
    if check is not None:
        try:
            check(part)
        except Exception as err:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the downloaded file is not valid ({err})") from err
    part.replace(dest)
    return dest
