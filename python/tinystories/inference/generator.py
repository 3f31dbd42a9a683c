"""The public inference API: :class:`Generator` (its generations are in :mod:`.generation`)."""

from __future__ import annotations

import numbers
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _core
from ..formats.constants import QUANTIZE_OPTIONS
from ..formats.llama2c_header import ModelConfig
from ..hub.cache import default_model, fetch_model
from .generation import BatchGeneration, Completion, Generation
from .sampling import (
    MAX_INT,
    MAX_SEED,
    SamplingParams,
    clock_seed,
    engine_options,
    sampling_signature,
)
from .tokenizer import PathLike, Tokenizer, as_id_list

if TYPE_CHECKING:  # NumPy loads only where arrays are made: it starts BLAS threads
    import numpy


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


class Generator:
    """Text generation with a llama2.c model file (v0, v1 or v2) and its tokenizer.

    With no paths it uses the default model bundled in the package
    (:func:`tinystories.hub.cache.default_model`); :meth:`from_pretrained`
    downloads a named one.

    The weights are loaded once per file (Generators on one file share the
    loaded model: see the README's Speed section for how the kernels lay
    them out); one Generator may be used from many threads at once (every
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
        if n_threads is not None:
            if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
                raise TypeError(f"n_threads must be an int or None, got {n_threads!r}")
            most = MAX_INT  # the engine's n_threads is a C int
            if not 1 <= n_threads <= most:
                raise ValueError(f"n_threads must be in [1, {most}] or None, got {n_threads}")
        if quantize not in QUANTIZE_OPTIONS:
            raise ValueError(f"quantize must be None or 'q8_0', got {quantize!r}")
        if kernels is not None and not isinstance(kernels, str):
            raise TypeError(f"kernels must be a str or None, got {kernels!r}")
        if model_path is None and tokenizer_path is None:
            model_path, tokenizer_path = default_model()
        elif model_path is None or tokenizer_path is None:
            raise ValueError(
                "pass both model_path and tokenizer_path, or neither for the bundled default model"
            )
        self.model_path = os.fspath(model_path)
        # what an unpickled copy reloads with (__getstate__)
        self._options = {"n_threads": n_threads, "quantize": quantize, "kernels": kernels}
        try:
            self.tokenizer = Tokenizer(tokenizer_path)
        except (OSError, ValueError) as error:
            self._name_role(error, tokenizer_path, "tokenizer")
            raise
        try:
            self._native_model = _load_model(
                self.model_path, kernels or "", QUANTIZE_OPTIONS[quantize]
            )
        except (OSError, ValueError) as error:
            self._name_role(error, self.model_path, "model")
            raise
        self.config = GeneratorConfig(**self._model.config)
        if self.tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"{self.tokenizer.path}: tokenizer has {self.tokenizer.vocab_size} tokens but "
                f"{self.model_path} has vocab_size {self.config.vocab_size}; "
                "use the tokenizer the model was trained with"
            )
        self.n_threads = int(n_threads or 0)  # 0: the engine chooses

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
        :data:`tinystories.hub.registry.REGISTRY` (``"stories260K"``, ``"stories15M"``,
        ``"stories42M"``, ``"stories110M"``). Files are cached in ``cache_dir``, else
        ``$TINYSTORIES_CACHE``, else ``~/.cache/tinystories``; downloads resume and are
        validated before use; ``offline=True`` reads only the cache. Other keyword
        arguments go to :class:`Generator`.

        >>> g = Generator.from_pretrained("stories15M")  # doctest: +SKIP
        """
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

    # Every generation method takes the options of :class:`SamplingParams` as keyword
    # arguments (max_new_tokens, temperature, top_p, top_k, min_p, the penalties, seed,
    # stop, stop_token_ids, context_shift), or a ``sampling=SamplingParams(...)`` that
    # they override.

    @sampling_signature
    def generate(
        self, prompt: str = "", *, sampling: SamplingParams | None = None, **options: Any
    ) -> str:
        """The completion of ``prompt`` (the text after it).

        Sampling stops at BOS or at the end of the context when
        ``max_new_tokens`` is None, so ``prompt + generate(prompt)`` is what
        llama2.c's ``run -n <seq_len>`` prints for the same seed.
        """
        return self.start(prompt, sampling=sampling, **options).text()

    @sampling_signature
    def stream(
        self, prompt: str = "", *, sampling: SamplingParams | None = None, **options: Any
    ) -> Iterator[str]:
        """Yields the completion in pieces as they are sampled.

        Arguments are checked when ``stream`` is called, before any text is made.
        ``"".join(stream(...)) == generate(...)`` for the same arguments and seed; with
        ``stop``, text that could still begin a stop string is held back until it cannot.
        """
        return self.start(prompt, sampling=sampling, **options).pieces()

    @sampling_signature
    def complete(
        self,
        prompt: str = "",
        *,
        logprobs: int | None = None,
        sampling: SamplingParams | None = None,
        **options: Any,
    ) -> Completion:
        """The :class:`Completion` of ``prompt``: its text, token ids, finish reason,
        speed and, with ``logprobs=k`` (0..20), each token's log-probability and the k
        most likely tokens'. ``complete(...).text == generate(...)``."""
        return self.start(prompt, logprobs=logprobs, sampling=sampling, **options).completion()

    @sampling_signature
    def start(
        self,
        prompt: str = "",
        *,
        logprobs: int | None = None,
        sampling: SamplingParams | None = None,
        **options: Any,
    ) -> Generation:
        """A :class:`Generation` of ``prompt``, its arguments checked, nothing sampled yet."""
        params = SamplingParams.of(sampling, **options).with_seed()
        prompt_ids, steps = self.prompt_steps(prompt, params)
        native = _core.Generation(
            self._model,
            self.tokenizer._native,
            prompt_ids,
            steps,
            engine_options(params, logprobs),
            self.n_threads,
        )
        return Generation(native, params, len(prompt_ids), logprobs)

    @sampling_signature
    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        sampling: SamplingParams | None = None,
        seed: int | Sequence[int] | None = None,
        max_batch: int = 32,
        **options: Any,
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
        batch = self.start_batch(
            prompts, sampling=sampling, seed=seed, max_batch=max_batch, **options
        )
        return batch.run()

    @sampling_signature
    def complete_batch(
        self,
        prompts: Sequence[str],
        *,
        logprobs: int | None = None,
        sampling: SamplingParams | None = None,
        seed: int | Sequence[int] | None = None,
        max_batch: int = 32,
        **options: Any,
    ) -> list[Completion]:
        """:meth:`generate_batch` giving a :class:`Completion` per prompt (see
        :meth:`complete`); in a batch ``tokens_per_s`` is over the batch's time."""
        batch = self.start_batch(
            prompts,
            logprobs=logprobs,
            sampling=sampling,
            seed=seed,
            max_batch=max_batch,
            **options,
        )
        return batch.completions()

    @sampling_signature
    def samples(
        self,
        prompt: str,
        n: int,
        *,
        logprobs: int | None = None,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
        max_batch: int = 32,
        **options: Any,
    ) -> list[Completion]:
        """``n`` completions of one prompt, generated together with seeds ``seed``,
        ``seed + 1``, ... (None: ``seed`` from the clock): sample ``i`` is
        ``complete(prompt, seed=seed + i)``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if seed is None and sampling is not None:
            seed = sampling.seed
        base = SamplingParams.of(seed=seed).with_seed().seed
        if base + n - 1 > MAX_SEED:
            raise ValueError(f"seed {base} + {n - 1} samples would pass 2**64 - 1")
        return self.complete_batch(
            [prompt] * n,
            logprobs=logprobs,
            sampling=sampling,
            seed=[base + i for i in range(n)],
            max_batch=max_batch,
            **options,
        )

    @sampling_signature
    def start_batch(
        self,
        prompts: Sequence[str],
        *,
        logprobs: int | None = None,
        sampling: SamplingParams | None = None,
        seed: int | Sequence[int] | None = None,
        max_batch: int = 32,
        **options: Any,
    ) -> BatchGeneration:
        """The :class:`BatchGeneration` behind :meth:`generate_batch`, every prompt
        checked and queued, nothing run yet."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of str, not a str")
        prompts = list(prompts)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        if seed is None and sampling is not None:
            seed = sampling.seed
        if seed is None or isinstance(seed, numbers.Integral):
            seeds = [seed] * len(prompts)
        else:
            seeds = list(seed)
            if len(seeds) != len(prompts):
                raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        params = SamplingParams.of(sampling, **options, seed=None)
        if seed is None:
            seeds = [clock_seed()] * len(prompts)
        if not prompts:
            return BatchGeneration(None)
        native = self.engine_batch(min(max_batch, len(prompts)))
        all_params, prompt_tokens = [], []
        for prompt, prompt_seed in zip(prompts, seeds, strict=True):
            prompt_params = SamplingParams.of(params, seed=prompt_seed)
            prompt_ids, steps = self.prompt_steps(prompt, prompt_params)
            native.add(prompt_ids, steps, engine_options(prompt_params, logprobs))
            all_params.append(prompt_params)
            prompt_tokens.append(len(prompt_ids))
        return BatchGeneration(native, all_params, prompt_tokens, logprobs)

    # ---------------------------------------------------------------- logits

    def logits(self, ids: Sequence[int]) -> numpy.ndarray:
        """Logits after each of ``ids`` (float32, shape ``[len(ids), vocab_size]``)."""
        ids = as_id_list(ids, self.config.vocab_size)
        if not ids:
            raise ValueError("ids must contain at least one token")
        if len(ids) > self.config.seq_len:
            raise ValueError(
                f"{len(ids)} tokens do not fit the model's context of {self.config.seq_len}"
            )
        session = _core.Session(self._model, self.n_threads)
        return session.eval(ids, 0, True)

    # ------------------------------------------------- for engine-level callers

    def engine_batch(self, max_batch: int) -> _core.BatchGeneration:
        """An empty engine batch on this model with ``max_batch`` slots, for a caller that
        adds requests and steps it itself (the server's scheduler); see :meth:`prompt_steps`
        and :func:`tinystories.inference.sampling.engine_options` for what ``add`` takes."""
        return _core.BatchGeneration(self._model, self.tokenizer._native, max_batch, self.n_threads)

    def prompt_steps(self, prompt: str, params: SamplingParams) -> tuple[list[int], int]:
        """The prompt's ids and the positions to run (run.c's ``steps``) for ``params``;
        ValueError when the prompt does not fit the context."""
        prompt_ids = self.encode(prompt)
        seq_len = self.config.seq_len
        if len(prompt_ids) > seq_len:
            raise ValueError(
                f"the prompt is {len(prompt_ids)} tokens but the model's context is {seq_len}"
            )
        if params.max_new_tokens is None:
            return prompt_ids, seq_len
        # run.c samples one token per position from the last prompt token on; only a
        # context shift goes past seq_len.
        steps = len(prompt_ids) - 1 + params.max_new_tokens
        return prompt_ids, min(MAX_INT if params.context_shift else seq_len, steps)

    @staticmethod
    def _name_role(error: Exception, path: PathLike, role: str) -> None:
        """Puts the role after the file's name in a load error ("tok.bin (given as the
        model): ..."), so that swapped paths are plain; the engine's messages start with
        the path."""
        path, message = os.fsdecode(path), str(error)
        if message.startswith(path):
            error.args = (f"{path} (given as the {role}){message[len(path) :]}",)

    # -------------------------------------------------------------- lifetime

    @property
    def _model(self) -> _core.Model:
        """The loaded model, shared with the other Generators on its file."""
        self._require_open()
        return self._native_model

    def _require_open(self) -> None:
        if self._native_model is None:
            raise ValueError("generator is closed")

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._native_model is None

    def close(self) -> None:
        """Releases this Generator's hold on the loaded model; using it afterwards raises
        ValueError. Closing twice is allowed. Generators on one file share one model,
        which is freed when the last of them (and the last generation in progress) lets
        go of it."""
        self._native_model = None

    def __enter__(self) -> Generator:
        self._require_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its paths and options, not its weights: unpickling loads the files
        again (a process pool's workers need the same paths)."""
        self._require_open()
        return {
            "model_path": self.model_path,
            "tokenizer_path": self.tokenizer.path,
            **self._options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        Generator.__init__(self, **state)
