"""Fails when a LeakSanitizer report has a leak allocated by our code.

    python tests/sanitize/lsan_ours.py LOG...

The interpreter itself leaves allocations unreachable at exit, so a Python
process under LeakSanitizer always reports leaks. A leak is ours when a frame
of its allocation stack is in csrc/run/ (the C library) or bindings/ (the
extension); those are printed and the exit status is 1.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

OURS = re.compile(r"/(csrc/run|bindings)/[^ :]+\.(c|cpp|h):\d+")


def main(paths: list[str]) -> int:
    ours, others, errors = [], 0, []
    for path in paths:
        text = Path(path).read_text(errors="replace")
        if "ERROR: AddressSanitizer" in text or "runtime error:" in text:
            errors.append(path)
        for block in re.split(r"\n(?=(?:Direct|Indirect) leak of)", text):
            if not block.startswith(("Direct leak", "Indirect leak")):
                continue
            if OURS.search(block):
                ours.append(block)
            else:
                others += 1
    for block in ours:
        print(block.strip(), "\n")
    for path in errors:
        print(f"sanitizer error report in {path}:\n{Path(path).read_text(errors='replace')}")
    print(
        f"lsan: {len(paths)} logs, {len(ours)} leaks in our code, "
        f"{others} in the interpreter (ignored), {len(errors)} other sanitizer reports"
    )
    return 1 if ours or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
