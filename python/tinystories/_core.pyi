"""Type stub of the native core (bindings/core.cpp); the public API is in tinystories."""

import numpy as np
import numpy.typing as npt

TOKEN_UNK: int
TOKEN_BOS: int
TOKEN_EOS: int
TOKEN_FIRST_BYTE: int
TOKEN_BYTES: int
QUANTIZE_NONE: int
QUANTIZE_Q8_0: int

class FormatError(ValueError):
    """A malformed, truncated or inconsistent model or tokenizer file."""

def kernels_available() -> str: ...
def default_group_size(dim: int) -> int: ...
def stream_read_gbps(bytes: int, n_threads: int, repeats: int) -> float: ...

FINISH_STOP: int
FINISH_LENGTH: int
FINISH_CANCELLED: int
MAX_TOP_LOGPROBS: int
SEED_ZERO_STATE: int

# (logprob, [(token id, logprob), ...]) of a sampled token, when asked for.
TokenLogprobs = tuple[float, list[tuple[int, float]]]

class Options:
    def __init__(
        self,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int,
        min_p: float,
        repetition_penalty: float,
        presence_penalty: float,
        frequency_penalty: float,
        stop_token_ids: list[int],
        context_shift: bool,
        n_keep: int,
        logprobs: bool,
        top_logprobs: int,
    ) -> None: ...

class Sampler:
    def __init__(self, vocab_size: int, options: Options) -> None: ...
    def accept(self, token: int, is_prompt: bool) -> None: ...
    def sample(self, logits: npt.ArrayLike) -> int: ...

class Model:
    def __init__(
        self,
        path: str,
        kernels: str = "",
        quantize: int = 0,
        group_size: int = 0,
        n_threads: int = 0,
    ) -> None: ...
    @property
    def config(self) -> dict[str, int | bool]: ...
    @property
    def kernels(self) -> str: ...

class Tokenizer:
    def __init__(self, path: str) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    def token(self, id: int) -> bytes: ...
    def encode(self, text: bytes, bos: bool, eos: bool) -> list[int]: ...
    def decode(self, ids: list[int], skip: list[int]) -> bytes: ...

class Session:
    def __init__(self, model: Model, n_threads: int) -> None: ...
    def eval(
        self, ids: npt.ArrayLike, pos: int, want_logits: bool
    ) -> npt.NDArray[np.float32] | None: ...

class Generation:
    def __init__(
        self,
        model: Model,
        tokenizer: Tokenizer,
        prompt: list[int],
        steps: int,
        options: Options,
        n_threads: int,
    ) -> None: ...
    def next(self) -> tuple[int, bytes, bool, TokenLogprobs | None] | None: ...
    def run(self, include_prompt: bool) -> tuple[bytes, list[int]]: ...
    @property
    def stats(self) -> dict[str, float]: ...

class BatchGeneration:
    def __init__(
        self, model: Model, tokenizer: Tokenizer, max_batch: int, n_threads: int
    ) -> None: ...
    def add(self, prompt: list[int], steps: int, options: Options) -> int: ...
    def cancel(self, id: int) -> None: ...
    def step(self) -> list[tuple[int, int, bytes, bool, TokenLogprobs | None, int]]: ...
    def advance(
        self, max_steps: int, max_seconds: float
    ) -> list[tuple[int, list[int], bytes, list[int], list[TokenLogprobs] | None, int]]: ...
    def interrupt(self) -> None: ...
    def run(self) -> list[bytes]: ...
    @property
    def n_generated(self) -> int: ...
    @property
    def token_ids(self) -> list[list[int]]: ...
    @property
    def finish_reasons(self) -> list[int]: ...
