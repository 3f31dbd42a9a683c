"""The public inference API: :class:`Generator` and :class:`Tokenizer`."""

from __future__ import annotations

import codecs
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import _core
from .model_file import ModelConfig

BOS = 1
EOS = 2
_MAX_SEED = 2**64 - 1

PathLike = str | os.PathLike

QUANTIZE_OPTIONS = {None: 0, "q8_0": 1}  # values: the C library's TS_QUANTIZE_*


def kernels() -> list[str]:
    """The kernel sets this CPU runs, fastest first (e.g. ``["avx512", "avx2", "scalar"]``).

    ``Generator(..., kernels=NAME)`` picks one; by default the first, or the
    environment variable ``TINYSTORIES_KERNELS`` when set.
    """
    return _core.kernels_available().split()


# Loaded models by (file identity, options): Generators on one file share one
# mapping of its weights while any of them is alive.
_models: weakref.WeakValueDictionary[tuple, _core.Model] = weakref.WeakValueDictionary()
_models_lock = threading.Lock()


def _load_model(path: str, kernels: str, quantize: int) -> _core.Model:
    try:
        st = os.stat(path)
    except OSError:
        return _core.Model(path, kernels, quantize)  # the engine words the error
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, kernels, quantize)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _core.Model(path, kernels, quantize)
            _models[key] = model
        return model


@dataclass(frozen=True)
class GeneratorConfig(ModelConfig):
    """A loaded model's architecture plus its file format."""

    version: int = 0  # 0, 1 or 2 (Q8_0)
    group_size: int = 0  # Q8_0 group size for version 2 files


class Tokenizer:
    """A llama2.c ``tokenizer.bin`` vocabulary, encoding exactly like run.c."""

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        self._native = _core.Tokenizer(self.path)

    @property
    def vocab_size(self) -> int:
        return self._native.vocab_size

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of ``text``: BOS, the dummy-prefix space, characters, merges."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        return self._native.encode(text.encode("utf-8", "surrogatepass"), bos, eos)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` as run.c prints it (BOS and EOS print nothing)."""
        raw = self._native.decode(_as_id_list(ids, self.vocab_size), [BOS, EOS])
        return raw.decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The raw vocabulary entry of ``token``."""
        return self._native.token(token)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"


class Generator:
    """Text generation with a llama2.c model file (v0, v1 or v2) and its tokenizer.

    With no paths it uses the default model bundled in the package
    (:func:`tinystories.pretrained.default_model`); :meth:`from_pretrained`
    downloads a named one.

    Loading memory-maps the weights (Generators on one file share the
    mapping); one Generator may be used from many threads at once (every
    call runs on its own session).

    ``quantize="q8_0"`` quantizes an fp32 file to Q8_0 on load, as llama2.c's
    export.py writes v2 files (v2 files are Q8_0 already). ``kernels`` picks
    a kernel set from :func:`kernels` (None: the fastest, or
    ``TINYSTORIES_KERNELS``). ``n_threads`` None lets the engine choose.

    >>> g = Generator("model.bin", "tok105.bin")          # doctest: +SKIP
    >>> g.generate("Once upon a time", temperature=0.8, seed=42)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: PathLike | None = None,
        tokenizer_path: PathLike | None = None,
        *,
        n_threads: int | None = None,
        quantize: str | None = None,
        kernels: str | None = None,
    ) -> None:
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ValueError(f"n_threads must be a positive int or None, got {n_threads!r}")
        if quantize not in QUANTIZE_OPTIONS:
            raise ValueError(f"quantize must be None or 'q8_0', got {quantize!r}")
        if kernels is not None and not isinstance(kernels, str):
            raise TypeError(f"kernels must be a str or None, got {kernels!r}")
        if model_path is None and tokenizer_path is None:
            from .pretrained import default_model

            model_path, tokenizer_path = default_model()
        elif model_path is None or tokenizer_path is None:
            raise ValueError(
                "pass both model_path and tokenizer_path, or neither for the bundled default model"
            )
        self.model_path = os.fspath(model_path)
        self.tokenizer = Tokenizer(tokenizer_path)
        self._model = _load_model(self.model_path, kernels or "", QUANTIZE_OPTIONS[quantize])
        self.config = GeneratorConfig(**self._model.config)
        if self.tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"{self.tokenizer.path}: tokenizer has {self.tokenizer.vocab_size} tokens but "
                f"{self.model_path} has vocab_size {self.config.vocab_size}; "
                "use the tokenizer the model was trained with"
            )
        self.n_threads = n_threads or 0  # 0: the engine chooses

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        cache_dir: PathLike | None = None,
        offline: bool = False,
        progress: bool = True,
        **generator_kwargs,
    ) -> Generator:
        """A Generator on a named pretrained model, downloaded into the cache when missing.

        ``name`` is ``"default"`` (the bundled model) or a key of
        :data:`tinystories.pretrained.REGISTRY` (``"stories260K"``, ``"stories15M"``,
        ``"stories42M"``, ``"stories110M"``). Files are cached in ``cache_dir``, else
        ``$TINYSTORIES_CACHE``, else ``~/.cache/tinystories``; downloads resume and are
        validated before use; ``offline=True`` reads only the cache. Other keyword
        arguments go to :class:`Generator`.

        >>> g = Generator.from_pretrained("stories15M")  # doctest: +SKIP
        """
        from .pretrained import fetch_model

        model, tokenizer = fetch_model(
            name, cache_dir=cache_dir, offline=offline, progress=progress
        )
        return cls(model, tokenizer, **generator_kwargs)

    @property
    def kernels(self) -> str:
        """The kernel set this Generator runs ("avx512", "avx2" or "scalar")."""
        return self._model.kernels

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Generator({self.model_path!r}, {self.tokenizer.path!r}: dim={c.dim}, "
            f"n_layers={c.n_layers}, vocab_size={c.vocab_size}, seq_len={c.seq_len}, v{c.version})"
        )

    # ------------------------------------------------------------------ text

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return self.tokenizer.encode(text, bos=bos)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def generate(
        self,
        prompt: str = "",
        *,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 0.9,
        top_k: int = 0,
        seed: int | None = None,
    ) -> str:
        """The completion of ``prompt`` (the text after it).

        Sampling stops at BOS or at the end of the context when
        ``max_new_tokens`` is None, so ``prompt + generate(prompt)`` is what
        llama2.c's ``run -n <seq_len>`` prints for the same seed.
        """
        generation = self._start(prompt, max_new_tokens, temperature, top_p, top_k, seed)
        text, _ = generation.run(False)
        return text.decode("utf-8", "replace")

    def stream(
        self,
        prompt: str = "",
        *,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 0.9,
        top_k: int = 0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yields the completion in pieces as they are sampled.

        Arguments are checked when ``stream`` is called, before any text is made.
        ``"".join(stream(...)) == generate(...)`` for the same arguments and seed.
        """
        generation = self._start(prompt, max_new_tokens, temperature, top_p, top_k, seed)
        return _completion_pieces(generation)

    def _stream_tokens(
        self,
        prompt: str = "",
        *,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 0.9,
        top_k: int = 0,
        seed: int | None = None,
    ) -> Iterator[tuple[int, str]]:
        """Like :meth:`stream`, but yields ``(token id, text)`` for every sampled token
        (the text may be empty while a UTF-8 character is incomplete). For the CLI."""
        generation = self._start(prompt, max_new_tokens, temperature, top_p, top_k, seed)
        return _token_pieces(generation)

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 0.9,
        top_k: int = 0,
        seed: int | Sequence[int] | None = None,
        max_batch: int = 32,
    ) -> list[str]:
        """The completions of many prompts, generated together.

        Up to ``max_batch`` sequences run at once: each step evaluates one
        position of every running sequence in one forward pass, and a
        finished sequence's slot goes to the next prompt. Completion ``i`` is
        exactly ``generate(prompts[i], ..., seed=seed_i)``, where ``seed_i``
        is ``seed`` when it is an int (every prompt gets the same seed), or
        ``seed[i]`` when it is a sequence; None picks one seed from the clock
        for all prompts.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of str, not a str")
        prompts = list(prompts)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [seed] * len(prompts)
        else:
            seeds = list(seed)
            if len(seeds) != len(prompts):
                raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if seed is None:
            seeds = [check_sampling(temperature, top_p, top_k, None)[3]] * len(prompts)
        if not prompts:
            return []
        batch = _core.BatchGeneration(
            self._model, self.tokenizer._native, min(max_batch, len(prompts)), self.n_threads
        )
        for prompt, prompt_seed in zip(prompts, seeds, strict=True):
            args = self._prepare(prompt, max_new_tokens, temperature, top_p, top_k, prompt_seed)
            batch.add(*args)
        return [text.decode("utf-8", "replace") for text in batch.run()]

    # ---------------------------------------------------------------- logits

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits after each of ``ids`` (float32, shape ``[len(ids), vocab_size]``)."""
        ids = _as_id_list(ids, self.config.vocab_size)
        if not ids:
            raise ValueError("ids must contain at least one token")
        if len(ids) > self.config.seq_len:
            raise ValueError(
                f"{len(ids)} tokens do not fit the model's context of {self.config.seq_len}"
            )
        session = _core.Session(self._model, self.n_threads)
        return session.eval(np.asarray(ids, dtype=np.int32), 0, True)

    # -------------------------------------------------------------- internal

    def _start(
        self,
        prompt: str,
        max_new_tokens: int | None,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
    ) -> _core.Generation:
        args = self._prepare(prompt, max_new_tokens, temperature, top_p, top_k, seed)
        return _core.Generation(self._model, self.tokenizer._native, *args, self.n_threads)

    def _prepare(
        self,
        prompt: str,
        max_new_tokens: int | None,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
    ) -> tuple[list[int], int, float, float, int, int]:
        """Checked (prompt ids, steps, temperature, top_p, top_k, seed) for a generation."""
        temperature, top_p, top_k, seed = check_sampling(temperature, top_p, top_k, seed)
        prompt_ids = self.encode(prompt)
        seq_len = self.config.seq_len
        if len(prompt_ids) > seq_len:
            raise ValueError(
                f"the prompt is {len(prompt_ids)} tokens but the model's context is {seq_len}"
            )
        if max_new_tokens is None:
            steps = seq_len
        else:
            if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
                raise TypeError(f"max_new_tokens must be an int or None, got {max_new_tokens!r}")
            if max_new_tokens < 0:
                raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
            # run.c samples one token per position from the last prompt token on.
            steps = min(seq_len, len(prompt_ids) - 1 + max_new_tokens)
        return prompt_ids, steps, temperature, top_p, top_k, seed


def _completion_pieces(generation: _core.Generation) -> Iterator[str]:
    """The text of a generation's sampled tokens, decoded incrementally as UTF-8."""
    for _, text in _token_pieces(generation):
        if text:
            yield text


def _token_pieces(generation: _core.Generation) -> Iterator[tuple[int, str]]:
    """``(token id, text)`` per sampled token (id -1: a final incomplete UTF-8 tail)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while (event := generation.next()) is not None:
        token, piece, is_prompt = event
        if not is_prompt:
            yield token, decoder.decode(piece)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield -1, tail


def check_sampling(
    temperature: float, top_p: float, top_k: int, seed: int | None
) -> tuple[float, float, int, int]:
    """Validates sampling arguments; returns them normalised (seed chosen if None)."""
    try:
        temperature = float(temperature)
        top_p = float(top_p)
    except (TypeError, ValueError):
        raise TypeError("temperature and top_p must be numbers") from None
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if not math.isfinite(top_p) or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise TypeError(f"top_k must be an int, got {top_k!r}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    if seed is None:
        # Like run.c: from the clock. Never 0, the xorshift fixed point.
        seed = (time.time_ns() & _MAX_SEED) or 1
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    elif not 1 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be in [1, 2**64 - 1] (0 is the RNG's fixed point), got {seed}")
    return temperature, top_p, int(top_k), int(seed)


def _as_id_list(ids: Sequence[int], vocab_size: int) -> list[int]:
    """``ids`` as a list of ints, each checked against the vocabulary."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of ints, not text")
    array = np.asarray(ids)
    if array.size == 0:
        return []
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TypeError("ids must be a 1-D sequence of ints")
    bad = np.flatnonzero((array < 0) | (array >= vocab_size))
    if bad.size:
        raise ValueError(
            f"token id {array[bad[0]]} at index {bad[0]} is outside the vocabulary of {vocab_size}"
        )
    return array.tolist()
