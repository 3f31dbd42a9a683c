"""Stop strings: cut generated text before the first occurrence of any of them."""

from __future__ import annotations

from collections.abc import Sequence


class StopText:
    """Filters text as it is generated: :meth:`feed` returns what is safe to show.

    Text that could still turn out to begin a stop string is held back, and only
    that much; once a stop string appears, everything from it on is dropped and
    :attr:`stopped` is True. With no stop strings every piece passes unchanged.

    >>> stop = StopText(["The end"])
    >>> stop.feed("Lily was happy. The"), stop.feed(" end."), stop.stopped
    ('Lily was happy. ', '', True)
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(stop)
        self.stopped = False
        self._held = ""  # the end of the text so far that begins some stop string

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held back) that can be shown now."""
        if self.stopped:
            return ""
        if not self.stop:
            return text
        text = self._held + text
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return text[: min(found)]
        held = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - held :]
        return text[: len(text) - held]

    def flush(self) -> str:
        """What was held back, once the text has ended without a stop string."""
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        """The length of the longest end of ``text`` that begins a stop string."""
        for n in range(min(len(text), max(map(len, self.stop)) - 1), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stop):
                return n
        return 0
