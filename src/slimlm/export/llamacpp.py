"""llama.cpp from Python: load a GGUF, score tokens, decode with the KV cache, and quantize tensors to the
K-quants (Q4_K, Q5_K, Q6_K) with llama.cpp's own quantizer.

The binding is ``xllamacpp`` (``pip install 'slimlm[export]'``): a prebuilt manylinux wheel (glibc 2.17, AVX2
CPU kernels compiled in) whose extension module exports llama.cpp's and ggml's C API. Its Python API is a
server; slimlm calls the C functions it needs directly through CFFI (`_CDEF`): ``llama_decode`` with a
logits flag on every position gives the per-position logits the export's perplexity check needs, and
``ggml_quantize_chunk`` is the routine llama.cpp's ``llama-quantize`` calls for every tensor. (The other
bindings on the registries do not fit this machine: ``llama-cpp-python`` compiles llama.cpp at install time,
about 20 minutes here; ``llama-cpp-py-sync``'s wheels need glibc 2.38; ``llama-cpp-cffi`` pins transformers
below 5.)

Trade-off: `_CDEF` declares three C structs of the llama.cpp build that xllamacpp bundles, so the xllamacpp
version is pinned in ``pyproject.toml``; `api` checks the declared layout against the library's own default
values and refuses a build that disagrees instead of passing it garbage.

Your own llama.cpp build: xllamacpp's wheel is portable, so its CPU kernels stop at AVX2. On a CPU with
AVX-512 (or another instruction set a portable wheel leaves out) llama.cpp compiled for the machine decodes
faster; set ``SLIMLM_LLAMACPP_LIB`` to its ``libllama.so`` (a shared build: ``cmake -DBUILD_SHARED_LIBS=ON``,
``GGML_NATIVE`` on by default) and slimlm calls that library instead, xllamacpp not needed. The same struct
check applies, so the build must share the C API of the pinned one (``llama.h`` of 2026-10). `describe`
names the library and `system_info` its kernels, so a measurement says which build it was.
"""

from __future__ import annotations

import collections
import importlib.util
import os
from pathlib import Path

import numpy as np

from slimlm.errors import ConfigError

PACKAGE, MODULE = "xllamacpp", "xllamacpp"
INSTALL = "pip install 'slimlm[export]' (it brings xllamacpp, a prebuilt llama.cpp)"
#: environment variable naming a ``libllama.so`` of your own llama.cpp build, used instead of xllamacpp's
LIB_ENV = "SLIMLM_LLAMACPP_LIB"

# llama.h / ggml.h of llama.cpp b11549 (the build in xllamacpp 2026.10.11549): enums as int, pointers the
# code never follows as void *
_CDEF = """
struct llama_model_params {
    void * devices; const void * tensor_buft_overrides; int32_t n_gpu_layers; int split_mode; int load_mode;
    int lazy_mode; int32_t main_gpu; const float * tensor_split; void * progress_callback;
    void * progress_callback_user_data; const void * kv_overrides; bool vocab_only; bool check_tensors;
    bool use_extra_bufts; bool no_host; bool no_alloc; bool load_mtp;
};
struct llama_context_params {
    uint32_t n_ctx; uint32_t n_batch; uint32_t n_ubatch; uint32_t n_seq_max; uint32_t n_rs_seq;
    uint32_t n_outputs_max; uint32_t n_outputs_max_per_seq; int32_t n_threads; int32_t n_threads_batch;
    int ctx_type; int rope_scaling_type; int pooling_type; int attention_type; int flash_attn_type;
    float rope_freq_base; float rope_freq_scale; float yarn_ext_factor; float yarn_attn_factor;
    float yarn_beta_fast; float yarn_beta_slow; uint32_t yarn_orig_ctx; float defrag_thold;
    void * cb_eval; void * cb_eval_user_data; int type_k; int type_v; size_t moe_cache_size;
    void * abort_callback; void * abort_callback_data; bool embeddings; bool offload_kqv; bool no_perf;
    bool op_offload; bool swa_full; bool kv_unified; void * samplers; size_t n_samplers; void * ctx_other;
};
typedef struct llama_batch {
    int32_t n_tokens; int32_t * token; float * embd; int32_t * pos; int32_t * n_seq_id; int32_t ** seq_id;
    int8_t * logits;
} llama_batch;
typedef void (*ggml_log_callback)(int level, const char * text, void * user_data);
void llama_log_set(ggml_log_callback log_callback, void * user_data);
void llama_backend_init(void);
void ggml_backend_load_all(void);
const char * llama_print_system_info(void);
struct llama_model_params llama_model_default_params(void);
struct llama_context_params llama_context_default_params(void);
void * llama_model_load_from_file(const char * path_model, struct llama_model_params params);
void * llama_init_from_model(void * model, struct llama_context_params params);
void llama_free(void * ctx);
void llama_model_free(void * model);
const void * llama_model_get_vocab(const void * model);
int32_t llama_vocab_n_tokens(const void * vocab);
int32_t llama_tokenize(const void * vocab, const char * text, int32_t text_len, int32_t * tokens,
                       int32_t n_tokens_max, bool add_special, bool parse_special);
uint64_t llama_model_n_params(const void * model);
void * llama_get_memory(const void * ctx);
void llama_memory_clear(void * mem, bool data);
struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
void llama_batch_free(struct llama_batch batch);
int32_t llama_decode(void * ctx, struct llama_batch batch);
float * llama_get_logits(void * ctx);
float * llama_get_logits_ith(void * ctx, int32_t i);
size_t ggml_quantize_chunk(int type, const float * src, void * dst, int64_t start, int64_t nrows,
                           int64_t n_per_row, const float * imatrix);
size_t ggml_row_size(int type, int64_t ne);
bool ggml_validate_row_data(int type, const void * data, size_t nbytes);
"""

_api = None


def own_library(library: str | None = None) -> str | None:
    """``library``, else the ``libllama`` that `LIB_ENV` names, if set (`ConfigError` when it names no file)."""
    path = library or os.environ.get(LIB_ENV, "").strip()
    if not path:
        return None
    if not Path(path).is_file():
        named = path if library else f"{LIB_ENV}={path}"
        raise ConfigError(f"{named} is not a file; point it at the libllama.so of a shared llama.cpp build"
                          + ("." if library else ", or unset it to use xllamacpp's."))
    return path


def available() -> bool:
    """Whether llama.cpp is at hand: your own build (`LIB_ENV`) or the xllamacpp package."""
    return own_library() is not None or importlib.util.find_spec(MODULE) is not None


class _Api:
    """llama.cpp's C API through CFFI: in ``library`` (a libllama.so), else the one `LIB_ENV` names, else inside
    xllamacpp's extension module."""

    def __init__(self, library: str | None = None):
        import cffi

        self.ffi = cffi.FFI()
        self.ffi.cdef(_CDEF)
        own = own_library(library)
        if own:  # ggml's symbols resolve through libllama's dependencies (libggml*.so beside it)
            self.path, self.version, self.source = str(Path(own).resolve()), "own build", f"own build {own}"
        else:
            import xllamacpp

            self.path, self.version = xllamacpp.xllamacpp.__file__, xllamacpp.__version__
            self.source = f"{PACKAGE} {self.version}"
        try:
            self.lib = self.ffi.dlopen(self.path)  # xllamacpp: the already loaded module, same handle
        except OSError as e:
            raise ConfigError(f"could not load llama.cpp from {self.path}: {str(e).splitlines()[0]}") from None
        self.log: collections.deque[str] = collections.deque(maxlen=20)  # llama.cpp's last messages, for errors
        self._sink = self.ffi.callback("ggml_log_callback", lambda _lvl, text, _u: self.log.append(
            self.ffi.string(text).decode(errors="replace")))
        self.lib.llama_log_set(self._sink, self.ffi.NULL)
        if own:  # a build with dynamically loaded backends (GGML_BACKEND_DL) registers none by itself
            try:
                self.lib.ggml_backend_load_all()
            except AttributeError:
                pass
        self.lib.llama_backend_init()
        cp, mp = self.lib.llama_context_default_params(), self.lib.llama_model_default_params()
        # llama.cpp's defaults: a shifted field would show here instead of corrupting a call
        if (cp.n_ubatch, cp.n_seq_max, cp.type_k, cp.type_v, cp.yarn_ext_factor, mp.vocab_only) != (
                512, 1, 1, 1, -1.0, False):
            raise ConfigError(f"{self.source} is a llama.cpp whose C structs differ from the ones slimlm declares; "
                              + (f"use a build with the same llama.h, or unset {LIB_ENV}." if own else
                                 "install the version slimlm pins: pip install 'slimlm[export]'."))

    def floats(self, ptr, n: int) -> np.ndarray:
        """A copy of ``n`` floats at a C ``float *``."""
        return np.frombuffer(self.ffi.buffer(ptr, 4 * n), dtype=np.float32).copy()


_builds: dict[str, _Api] = {}


def build(library: str | None = None) -> _Api:
    """The C API of one llama.cpp build: ``library`` (a libllama.so, loaded once per process) or, with None, the
    default `api`. Two builds can live in one process (each library has its own ggml), which is how
    ``bench/llamacpp_builds.py`` interleaves them."""
    if library is None:
        return api()
    key = str(Path(library).absolute())
    if key not in _builds:
        _builds[key] = _Api(key)
    return _builds[key]


def api() -> _Api:
    """The loaded C API (once per process); `ConfigError` when llama.cpp is not installed."""
    global _api
    if _api is None:
        if not available():
            raise ConfigError(f"llama.cpp is not installed; {INSTALL}.")
        _api = _Api()
    return _api


def describe() -> str:
    """``"llama.cpp (xllamacpp <version>)"``, or ``"llama.cpp (own build <path>)"``, for reports."""
    return f"llama.cpp ({api().source})"


def system_info() -> str:
    """llama.cpp's own line on the kernels it was built with, e.g. ``"CPU : SSE3 = 1 | ... | AVX2 = 1 | ..."``."""
    a = api()
    return a.ffi.string(a.lib.llama_print_system_info()).decode(errors="replace").strip()


class LlamaCpp:
    """One GGUF file loaded in llama.cpp with a fixed thread count and context.

    Args:
        path: the GGUF file.
        threads: threads for prompt processing and decoding.
        n_ctx: the context (the longest sequence scored or decoded, plus generated tokens).
        library: the libllama.so of a llama.cpp build to run it on (see `build`); default `api`'s.

    Example:
        >>> with LlamaCpp("model-f16.gguf", threads=1, n_ctx=256) as llm:
        ...     logits = llm.logits([1, 2, 3])  # (3, vocab)
    """

    def __init__(self, path: str | Path, threads: int = 1, n_ctx: int = 512, library: str | None = None):
        a = self._a = build(library)
        lib = a.lib
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        a.log.clear()
        self.model = lib.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            said = " ".join(m.strip() for m in a.log if "error" in m.lower() or "failed" in m.lower())[-300:]
            raise ConfigError(f"llama.cpp could not load {path}: {said or 'no reason given'}.")
        cp = lib.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_threads = cp.n_threads_batch = threads
        cp.n_seq_max = 1
        self.ctx = lib.llama_init_from_model(self.model, cp)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise ConfigError(f"llama.cpp could not create a context of {n_ctx} tokens for {path}.")
        self.n_ctx, self.threads = n_ctx, threads
        self.n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model)))
        self.n_params = int(lib.llama_model_n_params(self.model))
        self.n_past = 0

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self._a.lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self._a.lib.llama_model_free(self.model)
            self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """``text``'s token ids by the GGUF file's own tokenizer (what llama.cpp feeds the model from a prompt);
        ``add_special``: with the BOS/EOS the vocabulary asks for. Special tokens written in the text are not
        parsed (as a tokenizer called with ``split_special_tokens``, the safe reading of user text)."""
        lib, ffi = self._a.lib, self._a.ffi
        raw = text.encode()
        vocab = lib.llama_model_get_vocab(self.model)
        cap = len(raw) + 8
        buf = ffi.new("int32_t[]", cap)
        n = lib.llama_tokenize(vocab, raw, len(raw), buf, cap, add_special, False)
        if n < 0:  # the buffer was short: -n is the count
            cap = -n
            buf = ffi.new("int32_t[]", cap)
            n = lib.llama_tokenize(vocab, raw, len(raw), buf, cap, add_special, False)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed ({n}) on a text of {len(raw)} bytes")
        return list(buf[0:n])

    def reset(self) -> None:
        """Empty the KV cache: the next tokens start at position 0."""
        lib = self._a.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        self.n_past = 0

    def eval(self, tokens: list[int], all_logits: bool = False) -> np.ndarray:
        """Append ``tokens`` to the sequence (one ``llama_decode``) and return logits: ``(len(tokens), vocab)``
        with ``all_logits``, else the last position's ``(vocab,)``."""
        n = len(tokens)
        if not n or self.n_past + n > self.n_ctx:
            raise ValueError(f"{n} tokens after {self.n_past} do not fit the context of {self.n_ctx}")
        lib = self._a.lib
        batch = lib.llama_batch_init(n, 0, 1)
        try:
            batch.n_tokens = n
            for i, t in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(t), self.n_past + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if all_logits or i == n - 1 else 0
            rc = lib.llama_decode(self.ctx, batch)
        finally:
            lib.llama_batch_free(batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        self.n_past += n
        if all_logits:
            return self._a.floats(lib.llama_get_logits(self.ctx), n * self.n_vocab).reshape(n, self.n_vocab)
        return self._a.floats(lib.llama_get_logits_ith(self.ctx, -1), self.n_vocab)

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits at every position of ``tokens`` scored from an empty cache: ``(len(tokens), vocab)``."""
        self.reset()
        return self.eval(list(tokens), all_logits=True)

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """``n`` greedily decoded tokens after ``prompt``, one ``llama_decode`` per token (KV cache on)."""
        self.reset()
        last = self.eval(list(prompt))
        out = []
        for _ in range(n):
            out.append(int(last.argmax()))
            last = self.eval([out[-1]])
        return out


def logits_fn(path: str | Path, threads: int = 1, n_ctx: int = 512):
    """``fn(ids (1, T)) -> logits (1, T, V)`` on llama.cpp, for `slimlm.export.check.perplexity`."""
    import torch

    llm = LlamaCpp(path, threads=threads, n_ctx=n_ctx)

    def fn(ids):
        return torch.from_numpy(llm.logits(ids[0].tolist()))[None]  # (1, T, V)

    fn.llm = llm  # keeps the model alive as long as the function
    return fn


def quantize_rows(data: np.ndarray, kind: int, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize a 2-D float matrix row by row to ggml type ``kind`` (a ``gguf.GGMLQuantizationType`` value)
    with ``ggml_quantize_chunk``, as ``llama-quantize`` does: without an importance matrix, or with
    ``imatrix`` (one non-negative weight per column, the mean squared input activation of that column, as
    ``llama-imatrix`` computes it), which the 4/5-bit and K-quant types use to choose each block's scale so
    that the error falls where the activations are small (Q8_0 ignores it).

    Returns:
        The quantized bytes, ``(rows, row_bytes)`` uint8, the layout ``gguf.GGUFWriter.add_tensor`` takes
        with ``raw_dtype=kind``.
    """
    a = api()
    src = np.ascontiguousarray(data, dtype=np.float32)
    rows, n = src.shape
    row_bytes = int(a.lib.ggml_row_size(int(kind), n))
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    imp = a.ffi.NULL
    if imatrix is not None:
        weights = np.ascontiguousarray(imatrix, dtype=np.float32)
        if weights.shape != (n,):
            raise ValueError(f"the importance matrix has {weights.shape} values for rows of {n}")
        imp = a.ffi.cast("float *", weights.ctypes.data)
    size = a.lib.ggml_quantize_chunk(int(kind), a.ffi.cast("float *", src.ctypes.data),
                                     a.ffi.cast("void *", out.ctypes.data), 0, rows, n, imp)
    if size != out.nbytes or not a.lib.ggml_validate_row_data(int(kind), a.ffi.cast("void *", out.ctypes.data), size):
        raise RuntimeError(f"llama.cpp's quantizer returned invalid data for a {rows}x{n} tensor (type {kind})")
    return out
