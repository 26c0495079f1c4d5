"""Request bodies of the OpenAI-compatible subset, validated strictly (a string where a number belongs is a 400).

Unknown fields are ignored, as OpenAI clients send many (``user``, ``presence_penalty``, ...); the ones that
would change the answer and are not supported (``n`` > 1, ``logprobs``) are refused by name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    logprobs: None = Field(None, description="not supported")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops


class CompletionRequest(_Common):
    """``POST /v1/completions``."""

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send one prompt per request (a string, or a list of exactly one string)")
            return v[0]
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str


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
        return texts


class SwitchRequest(BaseModel):
    """``POST /admin/decision``: the decision number to serve (null: the latest recorded)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    decision: int | None = Field(None, ge=0)
