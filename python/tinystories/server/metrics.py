"""The server's counters and histograms, written in Prometheus' text format."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._values: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self._values.items()) or [((), 0)]:
            lines.append(f"{self.name}{_labels(key)} {value:g}")
        return lines


class Gauge:
    """A value read when the metrics are written."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help_text, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self.read():g}",
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self.buckets = sorted(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last: above every bucket
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self._counts, strict=False):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{self.name}_sum {self._sum:g}", f"{self.name}_count {self.count}"]
        return lines


def _labels(key: tuple[tuple[str, str], ...]) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in key) + "}"


class Metrics:
    """Everything ``GET /metrics`` shows."""

    def __init__(self) -> None:
        self.requests = Counter(
            "tinystories_requests_total", "HTTP requests by endpoint and status"
        )
        self.prompt_tokens = Counter("tinystories_prompt_tokens_total", "prompt tokens evaluated")
        self.completion_tokens = Counter("tinystories_completion_tokens_total", "tokens generated")
        self.time_to_first_token = Histogram(
            "tinystories_time_to_first_token_seconds",
            "from a request's arrival to its first generated token",
            [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        )
        self.tokens_per_second = Histogram(
            "tinystories_tokens_per_second",
            "a sequence's generation speed after its first token",
            [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000],
        )
        self.gauges: list[Gauge] = []

    def render(self) -> str:
        parts = [self.requests, self.prompt_tokens, self.completion_tokens, *self.gauges]
        parts += [self.time_to_first_token, self.tokens_per_second]
        return "\n".join(line for part in parts for line in part.render()) + "\n"
