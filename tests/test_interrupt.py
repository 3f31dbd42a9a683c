"""Ctrl-C during generation: KeyboardInterrupt within 100 ms, and the Generator still works.

A real SIGINT is sent to this process from a helper thread while the main
thread is inside ``generate`` / ``stream`` / ``generate_batch`` on a model
slow enough (a few ms per token, thousands of positions) that the call would
run for seconds. The latency is measured from just before ``os.kill`` to the
moment the ``except KeyboardInterrupt`` clause runs.

Why "best of several tries": on a loaded 2-core CI machine the helper or the
main thread can lose the CPU for tens of milliseconds at any moment, which
says nothing about the engine. The engine's bound is structural (the native
loop returns to Python to check for signals at least every 10 ms plus one
token), so one fast try proves it; a regression that stops checking, or
checks only after long stretches of work, fails every try.
"""

from __future__ import annotations

import inspect
import os
import signal
import threading
import time

import pytest
from support.files import synthetic_vocab
from tinystories import Generator
from tinystories.formats.llama2c import ModelConfig, random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer

LIMIT_S = 0.100
TRIES = 5
DELAY_S = 0.15  # signal this long after the call started (well inside it)

# ~2.6 M multiply-adds per token: a few ms each, seconds for the whole context.
SLOW = ModelConfig(
    dim=256,
    hidden_dim=512,
    n_layers=4,
    n_heads=8,
    n_kv_heads=4,
    vocab_size=64,
    seq_len=2048,
    shared_classifier=False,
)


@pytest.fixture(scope="module")
def slow_generator(tmp_path_factory) -> Generator:
    root = tmp_path_factory.mktemp("slow_model")
    weights = random_weights(SLOW, seed=3, scale=0.05)
    # A zero classifier row for BOS: its logit is always 0 while some other
    # token's is positive, so greedy decoding never ends the story early.
    weights["wcls"][1] = 0.0
    model = write_model(root / "slow.bin", SLOW, weights, version=0)
    tokenizer = write_tokenizer(root / "slow.tok", *synthetic_vocab(SLOW.vocab_size))
    return Generator(model, tokenizer)


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt), restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_latency(call) -> float:
    """Runs ``call()`` in this (the main) thread, sends SIGINT DELAY_S later,
    and returns the seconds from the signal to the KeyboardInterrupt."""
    lock = threading.Lock()
    state = {"in_call": False, "sent_at": None}

    def killer():
        time.sleep(DELAY_S)
        with lock:  # never signal once the call is over: that would hit pytest
            if state["in_call"]:
                state["sent_at"] = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=killer)
    try:
        state["in_call"] = True
        thread.start()
        call()
        with lock:
            state["in_call"] = False
    except KeyboardInterrupt:
        caught_at = time.perf_counter()
    else:
        pytest.fail(f"the call finished before the signal ({DELAY_S} s): make the model slower")
    finally:
        thread.join()
    assert state["sent_at"] is not None
    return caught_at - state["sent_at"]


def check_interrupt(call, generator: Generator) -> None:
    expected = generator.generate("tea", max_new_tokens=8, temperature=0.0)
    latencies = [interrupt_latency(call) for _ in range(TRIES)]
    assert min(latencies) < LIMIT_S, f"interrupt latencies (s): {latencies}"
    # usable afterwards: same output as before, and streams too
    assert generator.generate("tea", max_new_tokens=8, temperature=0.0) == expected
    assert "".join(generator.stream("tea", max_new_tokens=8, temperature=0.0)) == expected


def test_generate_is_interruptible(slow_generator, default_sigint):
    g = slow_generator
    check_interrupt(lambda: g.generate("tea", temperature=0.0), g)


def test_stream_is_interruptible(slow_generator, default_sigint):
    g = slow_generator

    def consume():
        for _ in g.stream("tea", temperature=0.0):
            pass

    check_interrupt(consume, g)


def test_generate_batch_is_interruptible(slow_generator, default_sigint):
    g = slow_generator
    batch = getattr(g, "generate_batch", None)
    if batch is None:
        pytest.skip(
            "Generator.generate_batch does not exist on this branch yet (it comes with the "
            "engine work); this test runs once it is merged"
        )
    parameters = inspect.signature(batch).parameters
    kwargs = {"temperature": 0.0} if "temperature" in parameters else {}
    check_interrupt(lambda: batch(["tea", "toast", "a", "tea tea"], **kwargs), g)
