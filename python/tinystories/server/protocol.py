"""The HTTP API's shapes: OpenAI's completion and chat requests (pydantic), the
tokenizer endpoints (llama.cpp's), and OpenAI's error body."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# A request body is strict about types (a string is not a number) and ignores fields
# it does not know, as OpenAI's clients send some (suffix, best_of, ...).
STRICT = ConfigDict(strict=True, extra="ignore")


class SamplingFields(BaseModel):
    """What completions and chat completions share. Omitted options take
    :class:`tinystories.SamplingParams`'s defaults (llama2.c's: top_p 0.9), not OpenAI's."""

    model_config = STRICT

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool = False
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    # extensions, as llama.cpp and vLLM name them
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop_token_ids: list[int] | None = None
    context_shift: bool | None = None

    def sampling_options(self) -> dict[str, Any]:
        """The SamplingParams keyword arguments given (None: the default)."""
        names = (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
            "stop",
            "stop_token_ids",
            "context_shift",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = ""
    max_tokens: int | None = 16  # OpenAI's default
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)


class ChatMessage(BaseModel):
    model_config = STRICT

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class TokenizeRequest(BaseModel):
    model_config = STRICT

    content: str
    add_special: bool = True  # BOS first


class DetokenizeRequest(BaseModel):
    model_config = STRICT

    tokens: list[int]


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The chat template: these are story models, not chat models, so the messages'
    contents are joined in order by newlines (no role markers) and the reply continues
    that text."""
    return "\n".join(m.content for m in messages)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None):
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
