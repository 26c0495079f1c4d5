"""Request bodies of the OpenAI-compatible subset, validated strictly (a string where a number belongs is a 400).

Unknown fields are ignored, as OpenAI clients send many (``user``, ``presence_penalty``, ...); the ones that
would change the answer and are not supported (``n`` > 1, ``logprobs``) are refused by name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _text(v: str) -> str:
    """``v`` if it is text a tokenizer can take: JSON's ``\\ud800`` escapes give a lone surrogate, not text."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate escape such as \\ud800)") from None
    return v


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(1.0, ge=0.0, le=2.0)  # null: the default, as OpenAI clients send it
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool | None = False
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int | None = Field(1, ge=1, le=1, description="only 1 is supported")
    logprobs: bool | None = Field(None, description="not supported: absent, null or false")

    @field_validator("temperature", "top_p", "stream", "n", mode="after")
    @classmethod
    def _default_for_null(cls, v, info):
        return cls.model_fields[info.field_name].default if v is None else v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v:
            raise ValueError("logprobs are not supported; leave it out, null or false")
        return None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return [_text(s) for s in stops]


class CompletionRequest(_Common):
    """``POST /v1/completions``."""

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send one prompt per request (a string, or a list of exactly one string)")
            return _text(v[0])
        return _text(v)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, v):
        return _text(v)


class ChatRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(..., min_length=1)


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``: one text or a list of texts."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    input: str | list[str]

    @field_validator("input")
    @classmethod
    def _texts(cls, v):
        texts = [v] if isinstance(v, str) else v
        if not texts or any(not t for t in texts):
            raise ValueError("input must be a non-empty string or a non-empty list of non-empty strings")
        return [_text(t) for t in texts]


class SwitchRequest(BaseModel):
    """``POST /admin/decision``: the decision number to serve (null: the latest recorded); required, so that an
    empty or mistyped body never switches anything."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decision: int | None = Field(..., ge=0)
