"""Python smoke for the sanitizer build: load, generate and free many Generators.

    python tests/sanitize/smoke.py MODEL_DIR [ROUNDS]

Run by .ci/sanitize with the ASan/UBSan-built extension (LD_PRELOAD=libasan)
and LeakSanitizer on; tests/sanitize/lsan_ours.py then fails the job if any
leak report has a frame in our code. Covers every native object's life cycle:
Generators over v0 and Q8_0 files, finished and abandoned streams, logits,
encode/decode, failed loads and bad arguments, threads, and native
generations outliving the Python objects that loaded their model.
"""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path

from tinystories import FormatError, Generator, SamplingParams, Tokenizer, _core
from tinystories.inference.sampling import engine_options


def main() -> int:
    models = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    tokenizer = models / "tok105.bin"
    for i in range(rounds):
        for name in ("model5000.bin", "model5000_q80.bin"):
            g = Generator(models / name, tokenizer)
            g.generate("Once upon a time", max_new_tokens=24, seed=i + 1)
            "".join(g.stream("Lily", max_new_tokens=12, seed=i + 1))
            abandoned = g.stream("Tom", max_new_tokens=50, seed=i + 1)
            next(abandoned)
            del abandoned
            g.logits([1, 5, 6, 7])
            g.decode(g.encode("caf\u00e9 \ud800 \U0001f600 tea" * 3))
            threads = [
                threading.Thread(target=g.generate, args=("tea",), kwargs={"max_new_tokens": 8})
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            del g
        for bad in (tokenizer, models / "missing.bin", models):
            try:
                Generator(bad, tokenizer)
            except (FormatError, OSError):
                pass
        try:
            Generator(models / "model5000.bin", tokenizer).generate("tea", temperature=-1)
        except ValueError:
            pass
        model = _core.Model(str(models / "model5000.bin"))
        tok = _core.Tokenizer(str(tokenizer))
        options = engine_options(SamplingParams(temperature=0.8, top_k=3, seed=i + 1), logprobs=2)
        generation = _core.Generation(model, tok, [1, 5], 30, options, 1)
        del model, tok
        gc.collect()
        generation.run(True)
        del generation
        Tokenizer(tokenizer).encode("x" * 1000)
    gc.collect()
    print(f"smoke: {rounds} rounds ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
