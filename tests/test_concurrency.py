"""One Generator, many threads: results independent of scheduling, safe lifetimes.

The native loops release the GIL, so these threads really run at once. Every
call gets its own session and sampler; the model and tokenizer are shared and
immutable, and the native objects hold them by reference count, so dropping
the last Python reference to a Generator while another thread (or a live
stream) still uses it is safe: the weights stay mapped until that work ends.
"""

from __future__ import annotations

import gc
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tinystories import Generator, SamplingParams, Tokenizer, _core
from tinystories.inference.sampling import engine_options

N_THREADS = 8
PROMPT = "Once upon a time"


def run_together(functions):
    """Runs the callables at once (released by one barrier); returns their results."""
    barrier = threading.Barrier(len(functions))

    def call(function):
        barrier.wait()
        return function()

    with ThreadPoolExecutor(len(functions)) as pool:
        return list(pool.map(call, functions))


@pytest.fixture(params=["model", "model_q80"])
def generator(request, tok105) -> Generator:
    return Generator(tok105[request.param], tok105["tokenizer"])


def test_eight_threads_generate_like_sequential_calls(generator):
    seeds = [1000 + i for i in range(N_THREADS)]

    def call(seed):
        return generator.generate(PROMPT, max_new_tokens=120, temperature=1.0, seed=seed)

    expected = [call(seed) for seed in seeds]
    assert len(set(expected)) > 1, "different seeds must give different stories"
    for _ in range(2):
        got = run_together([lambda seed=seed: call(seed) for seed in seeds])
        assert got == expected


def test_mixed_calls_in_threads(generator):
    """generate, stream, logits and encode/decode at once on one Generator."""
    ids = generator.encode(PROMPT)
    jobs = [
        lambda: generator.generate(PROMPT, max_new_tokens=80, seed=7),
        lambda: "".join(generator.stream(PROMPT, max_new_tokens=80, seed=7)),
        lambda: generator.logits(ids).tobytes(),
        lambda: generator.decode(generator.encode(PROMPT * 20)),
    ] * 2
    expected = [job() for job in jobs]
    assert expected[0] == expected[1], "stream and generate agree"
    assert run_together(jobs) == expected


def test_threads_with_random_models(random_model_files):
    """Odd shapes (MQA, GQA, unshared classifier) and all three formats, in parallel."""
    generators = [Generator(m, t) for (m, t, _, _) in random_model_files.values()]

    def call(g, seed):
        return g.generate("tea", max_new_tokens=30, temperature=0.9, seed=seed)

    jobs = [lambda g=g, s=s: call(g, s) for g in generators for s in (1, 2)]
    expected = [job() for job in jobs]
    assert run_together(jobs[:N_THREADS]) == expected[:N_THREADS]
    assert run_together(jobs[N_THREADS:]) == expected[N_THREADS:]


def test_drop_generator_while_another_thread_generates(tok105):
    generator = Generator(tok105["model"], tok105["tokenizer"])
    expected = generator.generate(PROMPT, seed=11, temperature=1.0)
    started = threading.Event()
    result = {}

    def work(g):
        started.set()
        result["text"] = g.generate(PROMPT, seed=11, temperature=1.0)

    thread = threading.Thread(target=work, args=(generator,))
    thread.start()
    started.wait()
    del generator  # the main thread's reference goes while the other runs
    gc.collect()
    thread.join()
    assert result["text"] == expected


def test_native_objects_outlive_their_generator(tok105):
    """A stream's native generation owns its model and tokenizer: freeing every
    Python object that loaded them, mid-stream, leaves it working."""
    generator = Generator(tok105["model"], tok105["tokenizer"])
    expected = generator.generate(PROMPT, seed=5, max_new_tokens=100)
    stream = generator.stream(PROMPT, seed=5, max_new_tokens=100)
    first = next(stream)

    model = _core.Model(str(tok105["model"]))
    tokenizer = _core.Tokenizer(str(tok105["tokenizer"]))
    prompt = tokenizer.encode(PROMPT.encode(), True, False)
    options = engine_options(SamplingParams(temperature=0.0, seed=1))
    native = _core.Generation(model, tokenizer, prompt, 40, options, 1)
    session = _core.Session(model, 1)
    model_ref = weakref.ref(model)
    del model, tokenizer, generator
    gc.collect()
    assert model_ref() is None, "the Python Model object is gone"
    pieces = []
    while (event := native.next()) is not None:
        pieces.append(event[1])
    assert pieces, "the generation still runs on the freed model's weights"
    logits = session.eval(np.array([1, 5], dtype=np.int32), 0, True)
    assert np.isfinite(logits).all()
    assert first + "".join(stream) == expected


def test_tokenizer_encode_in_threads(tok105):
    """Encoding from 8 threads at once on one Tokenizer."""
    tokenizer = Tokenizer(tok105["tokenizer"])
    texts = [PROMPT * (i + 1) + "\u00e9\ud800" * i for i in range(N_THREADS)]
    expected = [tokenizer.encode(t) for t in texts]
    assert run_together([lambda t=t: tokenizer.encode(t) for t in texts]) == expected
