"""The bad-input catalogue: every command, fed what a careless user or a hostile directory gives it.

Each case runs the CLI in-process and must: exit 2; print exactly one ``error:`` line that names the input
(the expected fragment) and says what to do; show no traceback; and leave the workspace exactly as it was
(nothing created, nothing of the user's touched; the workspace holds the user's files and every output
path the cases name).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from _cli_errors import error_line, snapshot

from slimlm.cli.main import main
from slimlm.models import load, save

TINY = "tiny:llama?layers=2"


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def _model_dir(ws: Path, name: str, spec: str = TINY) -> Path:
    d = ws / name
    save(load(spec), d)
    return d


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The user's workspace: bad models, bad data, bad recipes, and things --out must not touch."""
    ws = tmp_path_factory.mktemp("ws")
    good = _model_dir(ws, "good")
    # -- models
    (ws / "empty-model").mkdir()
    for name, edit in [
        ("cfg-list", lambda d: (d / "config.json").write_text("[1, 2]")),
        ("cfg-bad-json", lambda d: (d / "config.json").write_text("{\"model_type\": ")),
        ("cfg-binary", lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00\x81binary")),
        ("no-weights", lambda d: (d / "model.safetensors").unlink()),
        ("truncated", lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])),
        ("corrupt", lambda d: (d / "model.safetensors").write_bytes(struct.pack("<Q", 20) + b"not json at all!!!!!" * 9)),
        ("no-tokenizer", lambda d: [p.unlink() for p in d.iterdir() if p.name.startswith(("tokenizer", "special"))]),
        ("bad-meta", lambda d: (d / "slimlm.json").write_text("[]")),
    ]:
        edit(_model_dir(ws, name))
    for pk in (_model_dir(ws, "pickle-only"), _model_dir(ws, "bert-pickle-only", "tiny:bert")):
        (pk / "model.safetensors").unlink()
        (pk / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    shapes = _model_dir(ws, "wrong-shapes")  # weights of a 2-layer model, config of a wider one
    cfg = json.loads((shapes / "config.json").read_text())
    cfg["hidden_size"] *= 2
    _json(shapes / "config.json", cfg)
    arch = ws / "gpt2"
    arch.mkdir()
    _json(arch / "config.json", {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    sentinel = ws / "remote-code-ran"
    for name, file in [("remote-cfg", "config.json"), ("remote-tok", "tokenizer_config.json")]:
        d = _model_dir(ws, name)
        c = json.loads((d / file).read_text())
        c["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoTokenizer": ["evil.EvilTokenizer", None]}
        _json(d / file, c)
        (d / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    (ws / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    # -- data
    (ws / "empty.txt").write_text("")
    (ws / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (ws / "short.txt").write_text("Hi there")
    (ws / "text.txt").write_text("Shall I compare thee to a summer's day? Thou art more lovely and temperate.\n" * 40)
    (ws / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    (ws / "list.jsonl").write_text("[1, 2]\n")
    (ws / "nofield.jsonl").write_text('{"body": "the text is under another key"}\n' * 5)
    (ws / "notext.csv").write_text("body,label\nhello,a\n")
    (ws / "nul.csv").write_bytes(b"text,label\n\"a\x00b\",x\n")
    (ws / "data.parquet").write_bytes(b"PAR1")
    # -- recipes and spaces
    (ws / "typo.yaml").write_text("name: t\nstages:\n  - prune: {method: structured, layerz: 1}\n")
    (ws / "top-typo.yaml").write_text("name: t\nversoin: 1\nstages:\n  - prune: {method: magnitude, sparsity: 0.5}\n")
    (ws / "types.yaml").write_text("name: t\nstages:\n  - quantize: {scheme: int8-dynamic, smoothquant: lots}\n")
    (ws / "kind.yaml").write_text("name: t\nstages:\n  - shrink: {factor: 2}\n")
    (ws / "empty.yaml").write_text("")
    (ws / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    (ws / "syntax.yaml").write_text("name: [unclosed\n")
    (ws / "deep.yaml").write_text("name: deep\nstages:\n  - prune: {method: structured, layers: 9}\n")
    (ws / "space-typo.yaml").write_text("choices:\n  prunee: [none]\n")
    (ws / "space-types.yaml").write_text("choices:\n  quantize: int8-dynamic\n")
    # -- outputs the user owns
    (ws / "thesis").mkdir()
    (ws / "thesis" / "important.txt").write_text("years of work")
    (ws / "notes.txt").write_text("my notes")
    (ws / "ro").mkdir()
    (ws / "ro").chmod(0o555)
    (ws / "run-other").mkdir()
    _json(ws / "run-other" / "run.json", {"model": "tiny:bert", "options": {}})
    (ws / "run-corrupt").mkdir()
    (ws / "run-corrupt" / "run.json").write_text("{not json")
    # -- checkpoints not written by slimlm
    (ws / "foreign.checkpoint").mkdir()
    (ws / "foreign.checkpoint" / "state.pt").write_bytes(b"\x80\x04\x95evil pickle")
    _json(ws / "foreign.checkpoint" / "meta.json", {"step": 1, "tokens": 1, "config": {}, "history": [],
                                                    "eval_curve": [], "best": {}})
    (ws / "listmeta.checkpoint").mkdir()
    (ws / "listmeta.checkpoint" / "state.pt").write_bytes(b"x")
    (ws / "listmeta.checkpoint" / "meta.json").write_text("[]")
    (ws / "userfile.checkpoint").write_text("mine")
    assert good.is_dir()
    yield ws
    (ws / "ro").chmod(0o755)




E = "evaluate"
D = ["--data", "{ws}/text.txt"]
OUT = "--out"
# (id, argv with {ws}, fragment the error line must contain)
CASES = [
    # models
    ("model-missing", [E, "{ws}/nope", *D], "{ws}/nope does not exist"),
    ("model-empty-dir", [E, "{ws}/empty-model", *D], "no config.json"),
    ("model-config-list", [E, "{ws}/cfg-list", *D], "JSON list"),
    ("model-config-bad-json", [E, "{ws}/cfg-bad-json", *D], "not valid JSON"),
    ("model-config-binary", [E, "{ws}/cfg-binary", *D], "config.json"),
    ("model-no-weights", [E, "{ws}/no-weights", *D], "no weights"),
    ("model-truncated", [E, "{ws}/truncated", *D], "truncated"),
    ("model-corrupt", [E, "{ws}/corrupt", *D], "not a valid safetensors"),
    ("model-wrong-shapes", [E, "{ws}/wrong-shapes", *D], "could not load weights"),
    ("model-unsupported-arch", [E, "{ws}/gpt2", *D], "'gpt2' is not supported"),
    ("model-pickle-only", [E, "{ws}/pickle-only", *D], "pickled weights"),
    ("model-remote-code-config", [E, "{ws}/remote-cfg", *D], "auto_map in config.json"),
    ("model-remote-code-tokenizer", [E, "{ws}/remote-tok", *D], "auto_map in tokenizer_config.json"),
    ("model-no-tokenizer", [E, "{ws}/no-tokenizer", *D], "no tokenizer files"),
    ("model-bad-slimlm-json", [E, "{ws}/bad-meta", *D], "slimlm.json"),
    ("model-is-a-file", [E, "{ws}/notes.txt", *D], "is a file"),
    ("model-gguf-missing", [E, "{ws}/nope.gguf", *D], "does not exist"),
    ("model-gguf-corrupt", [E, "{ws}/model.gguf", *D], "GGUF"),
    ("model-unknown-builtin", [E, "builtin:gpt5", *D], "unknown builtin"),
    ("teacher-missing", [E, TINY, *D, "--teacher", "{ws}/nope"], "{ws}/nope does not exist"),
    ("prune-model-truncated", ["prune", "{ws}/truncated", *D, OUT, "{ws}/out"], "truncated"),
    ("quantize-model-no-tokenizer", ["quantize", "{ws}/no-tokenizer", "--scheme", "int8-dynamic", OUT, "{ws}/out"],
     "no tokenizer"),
    ("profile-model-empty", ["profile", "{ws}/empty-model"], "no config.json"),
    ("profile-model-remote", ["profile", "{ws}/remote-tok"], "auto_map"),
    ("distill-student-config-list", ["distill", "{ws}/cfg-list", "--teacher", TINY, *D, OUT, "{ws}/out"], "JSON list"),
    ("distill-teacher-arch", ["distill", TINY, "--teacher", "{ws}/gpt2", *D, OUT, "{ws}/out"], "not supported"),
    ("finetune-model-pickle", ["finetune", "{ws}/bert-pickle-only", "--data", "shakespeare-genre", OUT, "{ws}/out"],
     "pickled"),
    ("sensitivity-model-corrupt", ["sensitivity", "{ws}/corrupt", *D], "safetensors"),
    ("compress-model-corrupt", ["compress", "{ws}/corrupt", *D, "--ood-data", "none", OUT, "{ws}/run"],
     "safetensors"),
    ("search-model-arch", ["search", "{ws}/gpt2", *D, "--ood-data", "none", OUT, "{ws}/run"], "not supported"),
    # data
    ("data-missing", [E, TINY, "--data", "{ws}/nope.txt"], "{ws}/nope.txt does not exist"),
    ("data-empty", [E, TINY, "--data", "{ws}/empty.txt"], "is empty"),
    ("data-binary", [E, TINY, "--data", "{ws}/binary.txt"], "not UTF-8"),
    ("data-too-short", [E, TINY, "--data", "{ws}/short.txt"], "only"),
    ("data-jsonl-bad-line", [E, TINY, "--data", "{ws}/bad.jsonl"], "bad.jsonl:2 is not valid JSON"),
    ("data-jsonl-not-object", [E, TINY, "--data", "{ws}/list.jsonl"], "not an object"),
    ("data-jsonl-no-text-field", [E, TINY, "--data", "{ws}/nofield.jsonl"], "'text'"),
    ("data-csv-no-text-column", [E, TINY, "--data", "{ws}/notext.csv"], "'text'"),
    ("data-csv-nul", [E, TINY, "--data", "{ws}/nul.csv"], "nul.csv"),
    ("data-unsupported-type", [E, TINY, "--data", "{ws}/data.parquet"], "unsupported file type"),
    ("data-bad-split", [E, TINY, *D, "--split", "test"], "unknown split"),
    # a mistyped option of a data spec is named (it was dropped, and the file read as having no 'text' field)
    ("data-option-typo", [E, TINY, "--data", "{ws}/nofield.jsonl?txt=body"],
     "unknown option 'txt' in data '{ws}/nofield.jsonl?txt=body'; valid options: text, label"),
    ("data-option-no-value", [E, TINY, "--data", "{ws}/nofield.jsonl?text="], "option 'text' in data"),
    ("data-option-on-text-file", [E, TINY, "--data", "{ws}/text.txt?text=body"],
     "name the fields of a .jsonl/.csv file"),
    ("finetune-data-no-labels", ["finetune", "tiny:bert", *D, OUT, "{ws}/out"], "no labels"),
    ("prune-data-binary", ["prune", TINY, "--data", "{ws}/binary.txt", OUT, "{ws}/out"], "not UTF-8"),
    ("prune-data-too-short", ["prune", TINY, "--data", "{ws}/short.txt", OUT, "{ws}/out"], "fewer than one window"),
    ("quantize-data-empty", ["quantize", TINY, "--scheme", "int8-dynamic", "--data", "{ws}/empty.txt", OUT,
                             "{ws}/out"], "is empty"),
    ("distill-data-empty", ["distill", TINY, "--teacher", TINY, "--data", "{ws}/empty.txt", OUT, "{ws}/out"],
     "is empty"),
    ("sensitivity-data-missing", ["sensitivity", TINY, "--data", "{ws}/nope.txt"], "does not exist"),
    ("compress-data-empty", ["compress", TINY, "--data", "{ws}/empty.txt", OUT, "{ws}/run"], "is empty"),
    ("compress-data-too-short", ["compress", TINY, "--recipe", "int8-only", "--data", "{ws}/short.txt",
                                 "--ood-data", "none", "--no-profile", OUT, "{ws}/run"], "only"),
    ("search-data-binary", ["search", TINY, "--data", "{ws}/binary.txt", OUT, "{ws}/run"], "not UTF-8"),
    # numeric options out of range
    ("evaluate-max-tokens-negative", [E, TINY, *D, "--max-tokens", "-5"], "--max-tokens"),
    ("evaluate-max-tokens-tiny", [E, TINY, *D, "--max-tokens", "3"], "--max-tokens 3"),
    # the budget, not the text, is too small: say so (it used to say the split "has only 16 tokens")
    ("evaluate-max-tokens-at-the-minimum", [E, TINY, *D, "--max-tokens", "16"], "--max-tokens 16 leaves 15"),
    ("export-group-size-zero", ["export", TINY, "--format", "openvino", "--type", "int4", "--group-size", "0", OUT,
                                "{ws}/ov"], "--group-size 0"),
    ("evaluate-seq-len-1", [E, TINY, *D, "--seq-len", "1"], "--seq-len"),
    ("evaluate-seq-len-too-long", [E, "tiny:llama?max_pos=64", *D, "--seq-len", "512"], "exceeds the model"),
    ("evaluate-max-examples-negative", [E, TINY, *D, "--max-examples", "-1"], "--max-examples"),
    ("profile-repeats-0", ["profile", TINY, "--repeats", "0"], "--repeats"),
    ("profile-threads-0", ["profile", TINY, "--threads", "0"], "--threads"),
    ("profile-decode-negative", ["profile", TINY, "--decode-tokens", "-1"], "--decode-tokens"),
    ("profile-shapes-zero", ["profile", TINY, "--shapes", "0x16"], "--shapes"),
    ("profile-shapes-garbage", ["profile", TINY, "--shapes", "1xZ"], "--shapes"),
    ("prune-sparsity-above-1", ["prune", TINY, *D, "--method", "magnitude", "--sparsity", "1.5", OUT, "{ws}/out"],
     "sparsity"),
    ("prune-sparsity-negative", ["prune", TINY, *D, "--sparsity", "-0.1", OUT, "{ws}/out"], "sparsity"),
    ("prune-calib-samples-0", ["prune", TINY, *D, "--calib-samples", "0", OUT, "{ws}/out"], "--calib-samples"),
    ("prune-calib-seq-len-1", ["prune", TINY, *D, "--calib-seq-len", "1", OUT, "{ws}/out"], "--calib-seq-len"),
    ("prune-steps-0", ["prune", TINY, *D, "--schedule", "iterative", "--steps", "0", OUT, "{ws}/out"], "--steps"),
    ("prune-blocksize-0", ["prune", TINY, *D, "--method", "sparsegpt", "--blocksize", "0", OUT, "{ws}/out"],
     "blocksize"),
    ("prune-damp-negative", ["prune", TINY, *D, "--method", "sparsegpt", "--damp", "-1", OUT, "{ws}/out"], "damp"),
    ("prune-eval-tokens-negative", ["prune", TINY, *D, "--eval-tokens", "-1", OUT, "{ws}/out"], "--eval-tokens"),
    ("prune-pattern-bad", ["prune", TINY, *D, "--pattern", "5:4", OUT, "{ws}/out"], "pattern"),
    ("prune-structured-too-deep", ["prune", TINY, *D, "--structured", "layers=9", OUT, "{ws}/out"], "layers"),
    ("quantize-group-size-0", ["quantize", TINY, "--scheme", "int4-weight", "--method", "rtn", "--group-size", "0",
                               OUT, "{ws}/out"], "group"),
    ("quantize-smoothquant-2", ["quantize", TINY, "--scheme", "int8-dynamic", "--smoothquant", "2", OUT, "{ws}/out"],
     "smoothquant"),
    ("quantize-tolerance-negative", ["quantize", TINY, "--scheme", "int8-dynamic", "--tolerance", "-1", OUT,
                                     "{ws}/out"], "tolerance"),
    ("quantize-calib-rows-0", ["quantize", TINY, "--scheme", "int8-dynamic", "--calib-rows", "0", OUT, "{ws}/out"],
     "--calib-rows"),
    ("quantize-calib-len-0", ["quantize", TINY, "--scheme", "int8-dynamic", "--calib-len", "0", OUT, "{ws}/out"],
     "--calib-len"),
    ("quantize-qat-lr-0", ["quantize", TINY, "--scheme", "int8-dynamic", "--qat-steps", "2", "--qat-lr", "0", OUT,
                           "{ws}/out"], "lr"),
    ("quantize-unknown-scheme", ["quantize", TINY, "--scheme", "int3", OUT, "{ws}/out"], "int3"),
    ("compress-eval-tokens-negative", ["compress", TINY, "--eval-tokens", "-1", OUT, "{ws}/run"], "--eval-tokens"),
    ("compress-seq-len-1", ["compress", TINY, "--seq-len", "1", OUT, "{ws}/run"], "--seq-len"),
    ("compress-repeats-0", ["compress", TINY, "--repeats", "0", OUT, "{ws}/run"], "--repeats"),
    ("compress-max-drop-garbage", ["compress", TINY, "--max-drop", "lots", OUT, "{ws}/run"], "lots"),
    ("compress-traffic-negative", ["compress", TINY, "--traffic", "-1", OUT, "{ws}/run"], "--traffic"),
    ("compress-price-negative", ["compress", TINY, "--price-per-hour", "-1", OUT, "{ws}/run"], "--price-per-hour"),
    ("compress-latency-slo-negative", ["compress", TINY, "--max-latency-ms", "-5", OUT, "{ws}/run"],
     "--max-latency-ms"),
    ("compress-tier-unknown", ["compress", TINY, "--tier", "gold", OUT, "{ws}/run"], "gold"),
    ("search-trials-0", ["search", TINY, "--trials", "0", OUT, "{ws}/run"], "--trials"),
    ("search-eval-tokens-0", ["search", TINY, "--eval-tokens", "0", OUT, "{ws}/run"], "--eval-tokens"),
    ("search-timeout-garbage", ["search", TINY, "--timeout", "soon", OUT, "{ws}/run"], "--timeout"),
    ("search-objectives-unknown", ["search", TINY, "--objectives", "speed", OUT, "{ws}/run"], "speed"),
    ("profile-type-on-torch", ["profile", TINY, "--type", "q8_0"], "--type q8_0 picks the export type"),
    ("search-expand-unknown", ["search", TINY, "--expand", "colour", OUT, "{ws}/run"], "colour"),
    # an objective --no-profile cannot measure: refused before any trial runs (it used to fail after three)
    ("search-no-profile-latency", ["search", TINY, "--no-profile", "--objectives", "latency,size", OUT, "{ws}/run"],
     "--objectives latency needs profiling"),
    ("search-storage-unknown", ["search", TINY, "--storage", "foo://x", OUT, "{ws}/run"], "--storage foo://x"),
    ("search-storage-garbage", ["search", TINY, "--storage", "not a url", OUT, "{ws}/run"], "not a database URL"),
    ("search-decode-negative", ["search", TINY, "--decode-tokens", "-1", OUT, "{ws}/run"], "--decode-tokens"),
    ("distill-steps-0", ["distill", TINY, "--teacher", TINY, *D, "--steps", "0", OUT, "{ws}/out"], "steps"),
    ("distill-lr-0", ["distill", TINY, "--teacher", TINY, *D, "--lr", "0", OUT, "{ws}/out"], "lr"),
    ("distill-alpha-2", ["distill", TINY, "--teacher", TINY, *D, "--alpha", "2", OUT, "{ws}/out"], "alpha"),
    ("distill-temperature-0", ["distill", TINY, "--teacher", TINY, *D, "--temperature", "0", OUT, "{ws}/out"],
     "temperature"),
    ("distill-batch-size-0", ["distill", TINY, "--teacher", TINY, *D, "--batch-size", "0", OUT, "{ws}/out"],
     "batch"),
    ("distill-seq-len-1", ["distill", TINY, "--teacher", TINY, *D, "--seq-len", "1", OUT, "{ws}/out"], "seq"),
    ("distill-grad-accum-0", ["distill", TINY, "--teacher", TINY, *D, "--grad-accum", "0", OUT, "{ws}/out"],
     "grad"),
    ("distill-loss-unknown", ["distill", TINY, "--teacher", TINY, *D, "--loss", "l7", OUT, "{ws}/out"], "loss"),
    ("distill-no-teacher", ["distill", TINY, *D, OUT, "{ws}/out"], "--teacher"),
    ("distill-teacher-precision-fp16", ["distill", TINY, "--teacher", TINY, *D, "--teacher-precision", "fp16", OUT,
                                        "{ws}/out"], "--teacher-precision"),
    ("distill-freeze-every-layer", ["distill", TINY, "--teacher", TINY, *D, "--freeze-layers", "99", OUT, "{ws}/out"],
     "freeze_layers"),
    ("finetune-steps-0", ["finetune", "tiny:bert", "--data", "shakespeare-genre", "--steps", "0", OUT, "{ws}/out"],
     "'--steps': Input should be greater than or equal to 1"),  # it blamed --warmup, which was not typed
    # the option the user typed, not the config field it fills (--warmup-steps is no option)
    ("distill-warmup-negative", ["distill", TINY, "--teacher", TINY, *D, "--warmup", "-2", OUT, "{ws}/out"],
     "--warmup: "),
    ("distill-warmup-not-below-steps", ["distill", TINY, "--teacher", TINY, *D, "--warmup", "5", "--steps", "5", OUT,
                                        "{ws}/out"], "--warmup must be smaller than steps"),
    ("finetune-warmup-negative", ["finetune", "tiny:bert", "--data", "shakespeare-genre", "--warmup", "-2", OUT,
                                  "{ws}/out"], "--warmup: "),
    # a decoder is refused as one (it failed on the head's 'labels' option, which the user never typed)
    ("finetune-decoder-tiny", ["finetune", "tiny:llama", OUT, "{ws}/ft-llama"],
     "finetune trains encoder classifiers (BERT family"),
    ("finetune-decoder-dir", ["finetune", "{ws}/good", OUT, "{ws}/ft-llama"], "{ws}/good is a decoder (llama)"),
    ("sensitivity-ratios-garbage", ["sensitivity", TINY, *D, "--kind", "ffn", "--ratios", "half"], "--ratios"),
    ("sensitivity-kind-unknown", ["sensitivity", TINY, *D, "--kind", "rows"], "--kind"),
    ("sensitivity-eval-samples-0", ["sensitivity", TINY, *D, "--eval-samples", "0"], "--eval-samples"),
    ("report-traffic-negative", ["report", "{ws}/run-other", "--traffic", "-1"], "--traffic"),
    ("demo-max-tokens-negative", ["demo", "--model", TINY, "--max-tokens", "-5"], "--max-tokens"),
    ("option-typo", ["prune", TINY, "--sparsty", "0.5", OUT, "{ws}/out"], "--sparsty"),
    # recipes and spaces
    ("recipe-typo", ["recipes", "validate", "{ws}/typo.yaml"], "layerz"),
    ("recipe-wrong-type", ["recipes", "validate", "{ws}/types.yaml"], "smoothquant"),
    ("recipe-unknown-kind", ["recipes", "validate", "{ws}/kind.yaml"], "shrink"),
    ("recipe-empty", ["recipes", "validate", "{ws}/empty.yaml"], "empty.yaml"),
    ("recipe-binary", ["recipes", "validate", "{ws}/binary.yaml"], "binary.yaml"),
    ("recipe-bad-yaml", ["recipes", "validate", "{ws}/syntax.yaml"], "not valid YAML"),
    ("recipe-missing", ["recipes", "validate", "{ws}/nope.yaml"], "does not exist"),
    ("recipe-is-a-directory", ["recipes", "validate", "{ws}/thesis"], "{ws}/thesis is a directory, not a recipe file"),
    ("compress-recipe-is-a-directory", ["compress", TINY, "--recipe", "{ws}/thesis", OUT, "{ws}/run"],
     "is a directory, not a recipe file"),
    ("recipe-top-level-typo", ["recipes", "validate", "{ws}/top-typo.yaml"],
     "['versoin']; use name, description, version, stages."),
    ("recipe-unknown-builtin", ["recipes", "show", "fastest"], "fastest"),
    # a mistyped command points at the help that lists the commands (it pointed at the typo's own --help)
    ("command-unknown", ["nosuchcmd"], "No such command 'nosuchcmd'; see `slimlm --help`"),
    ("recipes-command-unknown", ["recipes", "nosuch"], "see `slimlm recipes --help`"),
    ("compress-recipe-typo", ["compress", TINY, "--recipe", "{ws}/typo.yaml", OUT, "{ws}/run"], "layerz"),
    ("compress-recipe-binary", ["compress", TINY, "--recipe", "{ws}/binary.yaml", OUT, "{ws}/run"], "binary.yaml"),
    ("compress-recipe-too-deep", ["compress", TINY, "--recipe", "{ws}/deep.yaml", *D, "--ood-data", "none",
                                  "--no-profile", OUT, "{ws}/run"], "layers"),
    ("search-space-typo", ["search", TINY, "--space", "{ws}/space-typo.yaml", OUT, "{ws}/run"], "prunee"),
    ("search-space-types", ["search", TINY, "--space", "{ws}/space-types.yaml", OUT, "{ws}/run"], "quantize"),
    ("search-space-binary", ["search", TINY, "--space", "{ws}/binary.yaml", OUT, "{ws}/run"], "binary.yaml"),
    ("search-space-empty", ["search", TINY, "--space", "{ws}/empty.yaml", OUT, "{ws}/run"], "choices"),
    ("search-space-missing", ["search", TINY, "--space", "{ws}/nope.yaml", OUT, "{ws}/run"], "nope.yaml"),
    # output paths
    ("out-unrelated-dir-prune", ["prune", TINY, *D, OUT, "{ws}/thesis"], "did not write"),
    ("out-unrelated-dir-force", ["quantize", TINY, "--scheme", "int8-dynamic", OUT, "{ws}/thesis", "--force"],
     "did not write"),
    ("out-existing-file", ["quantize", TINY, "--scheme", "int8-dynamic", OUT, "{ws}/notes.txt"], "existing file"),
    ("out-under-a-file", ["distill", TINY, "--teacher", TINY, *D, OUT, "{ws}/notes.txt/student"], "is a file"),
    ("out-read-only", ["finetune", "tiny:bert", "--data", "shakespeare-genre", OUT, "{ws}/ro/out"], "not writable"),
    ("out-proc", ["search", TINY, OUT, "/proc/slimlm-run"], "not writable"),
    ("out-earlier-variant-no-force", ["quantize", TINY, "--scheme", "int8-dynamic", OUT, "{ws}/good"], "--force"),
    ("out-compress-unrelated-dir", ["compress", TINY, OUT, "{ws}/thesis"], "did not write"),
    ("out-compress-variant-dir", ["compress", TINY, OUT, "{ws}/good"], "holds a slimlm variant"),
    ("out-sensitivity-existing-file", ["sensitivity", TINY, *D, OUT, "{ws}/notes.txt"], "already exists"),
    ("out-sensitivity-dir", ["sensitivity", TINY, *D, OUT, "{ws}/thesis"], "is a directory"),
    ("out-monitor-existing-file", ["monitor", "dashboard", "{ws}/run-other", OUT, "{ws}/notes.txt"],
     "already exists"),
    ("serve-missing", ["serve", "{ws}/nope"], "{ws}/nope is neither a run directory"),
    ("serve-not-a-run", ["serve", "{ws}/thesis"], "{ws}/thesis is neither a run directory"),
    ("serve-port-out-of-range", ["serve", "{ws}/good", "--port", "70000"], "--port"),
    ("decide-missing", ["decide", "{ws}/nope"], "{ws}/nope is not a directory"),
    ("monitor-not-a-run", ["monitor", "rules", "{ws}/thesis"], "no variants.jsonl"),
    ("monitor-unknown-kind", ["monitor", "bogus", "{ws}/run-other"], "bogus"),
    ("export-model-missing", ["export", "{ws}/nope", "--format", "gguf", OUT, "{ws}/out"], "{ws}/nope does not exist"),
    ("export-format-unknown", ["export", "{ws}/good", "--format", "bogus", OUT, "{ws}/out"], "bogus"),
    ("export-out-unrelated-dir", ["export", "{ws}/good", "--format", "gguf", OUT, "{ws}/thesis"],
     "not written by slimlm"),
    ("generate-model-missing", ["generate", "{ws}/nope", OUT, "{ws}/out"], "{ws}/nope does not exist"),
    ("generate-encoder", ["generate", "tiny:bert", OUT, "{ws}/out", "--tokens", "4"], "not a causal language model"),
    ("generate-out-unrelated-dir", ["generate", TINY, OUT, "{ws}/thesis", "--tokens", "4"], "did not write"),
    ("generate-out-unrelated-dir-resume", ["generate", TINY, OUT, "{ws}/thesis", "--tokens", "4", "--resume"],
     "did not write"),
    ("generate-out-is-file", ["generate", TINY, OUT, "{ws}/text.txt", "--tokens", "4"], "existing file"),
    ("generate-prompt-data-empty", ["generate", TINY, OUT, "{ws}/out", "--prompt-data", "{ws}/empty.txt",
                                    "--prompt-tokens", "4"], "empty"),
    ("generate-temperature-zero", ["generate", TINY, OUT, "{ws}/out", "--temperature", "0"], "temperature"),
    ("generate-remote-code", ["generate", "{ws}/remote-cfg", OUT, "{ws}/out"], "--trust-remote-code"),
    ("generate-max-minutes-0", ["generate", TINY, OUT, "{ws}/out", "--max-minutes", "0"], "--max-minutes"),
    ("distill-max-minutes-negative", ["distill", TINY, "--teacher", TINY, *D, "--max-minutes", "-1", OUT, "{ws}/out"],
     "--max-minutes"),
    ("distill-max-minutes-schedule", ["distill", TINY, "--teacher", TINY, *D, "--max-minutes", "5", "--schedule",
                                      "iterative:steps=2", "--prune", "layers=1", OUT, "{ws}/out"], "--schedule"),
    ("data-join-empty-part", ["evaluate", TINY, "--data", "pydoc+", "--max-tokens", "64"], "empty part"),
    ("data-join-tasks", ["evaluate", TINY, "--data", "pydoc+rotten-tomatoes", "--max-tokens", "64"],
     "different tasks"),
    ("report-not-a-run", ["report", "{ws}/thesis"], "thesis"),
    ("report-missing", ["report", "{ws}/nope"], "nope"),
    # checkpoints and caches not written by slimlm
    ("distill-resume-foreign-checkpoint", ["distill", TINY, "--teacher", TINY, *D, "--resume", "--checkpoint-every",
                                           "1", "--steps", "2", OUT, "{ws}/foreign"], "not a slimlm training checkpoint"),
    ("distill-resume-meta-list", ["distill", TINY, "--teacher", TINY, *D, "--resume", "--checkpoint-every", "1",
                                  "--steps", "2", OUT, "{ws}/listmeta"], "not a slimlm training checkpoint"),
    ("distill-checkpoint-is-user-file", ["distill", TINY, "--teacher", TINY, *D, "--checkpoint-every", "1", OUT,
                                         "{ws}/userfile"], "did not write"),
    ("compress-run-other-options", ["compress", TINY, *D, "--ood-data", "none", OUT, "{ws}/run-other"],
     "other options"),
    ("compress-run-corrupt", ["compress", TINY, *D, "--ood-data", "none", OUT, "{ws}/run-corrupt"], "not valid JSON"),
]


def test_the_catalogue_is_large_and_covers_every_command():
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert commands >= {"evaluate", "profile", "prune", "quantize", "distill", "finetune", "sensitivity",
                        "compress", "search", "report", "recipes", "demo", "serve", "decide", "monitor", "export",
                        "generate"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(ws, case, capsys):
    _, argv, fragment = case
    argv = [a.format(ws=ws) for a in argv]
    before = snapshot(ws)
    try:
        code = main(argv)
    finally:
        after = snapshot(ws)
        for rel in sorted(set(after) - set(before), key=len):  # keep later cases independent of a failure
            p = ws / rel
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
    line = error_line(code, capsys.readouterr().err)
    assert fragment.format(ws=ws) in line
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) ^ set(after) | {k for k in before if before[k] != after.get(k)}}
    assert not (ws / "remote-code-ran").exists()
