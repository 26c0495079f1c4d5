"""The model behind the routes: prompt encoding, token-by-token generation with sampling, classification.

Generation is a plain loop over the KV cache (one forward per token) rather than ``model.generate``: the
server needs each token as it is made (streaming, time to first token, stop strings that span tokens,
cancellation when the client leaves), and the loop is short enough to read. It works the same for every
variant slimlm writes (pruned, distilled, quantized), because each is an ordinary HF module.

Nothing here is async or thread-aware: the app runs these calls on its worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from slimlm.models import Model
from slimlm.models.decoding import cache_arg, cache_of, nucleus


class RequestError(ValueError):
    """A request the model cannot serve (too long, wrong task); ``kind`` names it for the error counter."""

    def __init__(self, kind: str, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.kind, self.status, self.param = kind, status, param


@dataclass
class Generation:
    """What one completion produced, with the timings the metrics need."""

    text: str = ""
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    ttft_s: float | None = None  # from the start of the work to the first token
    busy_s: float = 0.0  # model time spent on this request


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """Greedy at temperature 0; else nucleus sampling over ``softmax(logits / T)``."""
    if temperature <= 0:
        return int(logits.argmax())
    return int(torch.multinomial(nucleus(logits, temperature, top_p), 1, generator=gen))


class Engine:
    """One loaded model and what the routes ask of it.

    Args:
        model: a loaded `slimlm.models.Model`.
        name: the id shown in ``/v1/models`` and in responses.
    """

    def __init__(self, model: Model, name: str):
        self.model, self.name = model, name
        self.task = model.task
        self.max_positions = model.adapter.max_positions or 2048
        self._cache_arg = cache_arg(model.hf)
        self.eos = {t for t in (model.tokenizer.eos_token_id, getattr(model.hf.config, "eos_token_id", None))
                    if isinstance(t, int)}

    # prompts -------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_ids(self, messages: Sequence[dict]) -> list[int]:
        """Token ids of a chat through the tokenizer's chat template (a plain ``role: content`` fallback)."""
        tok = self.model.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.encode(text)

    def check_length(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt == 0:
            raise RequestError("invalid_request", "the prompt is empty; send at least one token of text.",
                               param="prompt")
        if n_prompt + max_tokens > self.max_positions:
            raise RequestError("context_length_exceeded",
                               f"the prompt has {n_prompt} tokens and max_tokens is {max_tokens}, over the model's "
                               f"context of {self.max_positions} tokens; shorten the prompt or lower max_tokens.",
                               param="prompt")

    # generation ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, ids: list[int], *, max_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 stop: Sequence[str] = (), seed: int | None = None,
                 on_text: Callable[[str], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> Generation:
        """Generate up to ``max_tokens`` tokens after ``ids``; ``on_text`` gets each new piece of text.

        Text is released only when it cannot be the start of a stop string, and never in the middle of a
        multi-byte character, so streamed pieces concatenate to exactly the returned text.
        """
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(seed if seed is not None else int(time.time_ns() % 2**31))
        out = Generation(prompt_tokens=len(ids))
        hold = max((len(s) for s in stop), default=1) - 1
        sent = 0
        x = torch.tensor([ids])  # (1, T)
        past = None
        for _ in range(max_tokens):
            res = self.model.hf(input_ids=x, use_cache=True, **{self._cache_arg: past})
            past = cache_of(res)
            tok = _sample(res.logits[0, -1], temperature, top_p, gen)  # logits (1, T, V) -> one id
            if out.ttft_s is None:
                out.ttft_s = time.perf_counter() - start
            if tok in self.eos:
                out.finish_reason = "stop"
                break
            out.tokens.append(tok)
            text = self.model.tokenizer.decode(out.tokens, skip_special_tokens=True)
            cut = min((i for i in (text.find(s, max(0, sent - len(s))) for s in stop if s) if i >= 0), default=-1)
            if cut >= 0:
                text, out.finish_reason = text[:cut], "stop"
            out.text = text
            if cut >= 0:
                break
            ready = len(text) - hold
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
                ready = min(ready, len(text.rstrip("\ufffd")))
            if on_text is not None and ready > sent:
                on_text(text[sent:ready])
                sent = ready
            if cancelled():
                out.finish_reason = "cancelled"
                break
            x = torch.tensor([[tok]])
        if on_text is not None and len(out.text) > sent:
            on_text(out.text[sent:])
        out.busy_s = time.perf_counter() - start
        return out

    # classification ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def classify(self, texts: Sequence[str], max_length: int | None = None) -> tuple[list[dict], int, float]:
        """Class probabilities per text; returns ``(results, tokens, seconds)``."""
        start = time.perf_counter()
        tok = self.model.tokenizer
        limit = max_length or self.max_positions
        enc = tok(list(texts), padding=True, truncation=False, return_tensors="pt")
        n = int(enc["input_ids"].shape[1])
        if n > limit:
            raise RequestError("context_length_exceeded", f"an input has {n} tokens, over the model's context of "
                               f"{limit} tokens; shorten it.", param="input")
        probs = self.model.hf(**enc).logits.float().softmax(-1)  # (B, C)
        labels = getattr(self.model.hf.config, "id2label", None) or {}
        results = []
        for i, row in enumerate(probs):
            best = int(row.argmax())
            results.append({"index": i, "label": str(labels.get(best, best)), "label_id": best,
                            "score": float(row[best]), "probs": [round(float(p), 6) for p in row]})
        return results, int(enc["attention_mask"].sum()), time.perf_counter() - start

    @torch.inference_mode()
    def logits(self, ids: list[int] | dict) -> torch.Tensor:
        """Logits for one sequence (causal LM: ``(T, V)``) or one encoded input (classifier: ``(C,)``)."""
        if isinstance(ids, dict):
            return self.model.hf(**ids).logits[0].float()
        return self.model.hf(input_ids=torch.tensor([ids])).logits[0].float()
