"""Text sampled from a model (`slimlm.distill.samples`): the sampler's distribution, determinism, resume, the
output's protection, reading it back as data, and distilling on it."""

import json
import types

import pytest
import torch

from slimlm.data import load_data
from slimlm.distill import DistillConfig, distill
from slimlm.distill.samples import make_config, sample_batch, sample_text, split_of
from slimlm.errors import ConfigError, OutputError
from slimlm.evaluate import evaluate
from slimlm.models import load
from slimlm.models.decoding import nucleus

TINY = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=3"


def test_nucleus_keeps_the_smallest_set_of_likeliest_tokens_reaching_top_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert torch.allclose(nucleus(logits, 1.0, 0.8), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(nucleus(logits, 1.0, 0.81), torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)
    assert torch.allclose(nucleus(logits, 1.0, 1.0), torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.allclose(nucleus(logits, 1.0, 0.1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))  # the likeliest stays
    assert torch.allclose(nucleus(logits, 2.0, 1.0), torch.softmax(logits / 2, -1))


class _FixedLM(torch.nn.Module):
    """A 'language model' whose next-token logits are always the same, to check what the sampler draws."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        b, t = input_ids.shape
        return types.SimpleNamespace(logits=self.logits.expand(b, t, -1), past_key_values=past_key_values)


def test_draws_follow_temperature_and_top_p_and_nothing_else():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    cfg = make_config(temperature=0.8, top_p=0.9, length=50, batch_size=100)
    rows = sample_batch(_FixedLM(logits), torch.zeros(100, 1, dtype=torch.long), 50, cfg, eos=None,
                        generator=torch.Generator().manual_seed(0))
    drawn = torch.tensor([t for r in rows for t in r])
    assert drawn.numel() == 5000
    freq = torch.bincount(drawn, minlength=6).float() / drawn.numel()
    want = nucleus(logits[None], 0.8, 0.9)[0]
    assert want[-1] == 0 and want[-2] == 0  # the nucleus drops the two least likely tokens here
    assert freq[want == 0].sum() == 0  # never drawn
    assert torch.allclose(freq, want, atol=0.025), (freq, want)  # 5000 draws: sd of a frequency <= 0.007


def test_a_row_ends_at_eos_which_is_not_written():
    logits = torch.tensor([0.0, 0.0, 0.0])  # token 2 is EOS and as likely as the others
    cfg = make_config(top_p=1.0, length=40, batch_size=64)
    rows = sample_batch(_FixedLM(logits), torch.zeros(64, 1, dtype=torch.long), 40, cfg, eos=2,
                        generator=torch.Generator().manual_seed(1))
    assert all(2 not in r for r in rows)
    assert sum(len(r) < 40 for r in rows) > 55  # P(no EOS in 40 draws) = (2/3)^40: every row ends early


class _Stop(Exception):
    pass


def _stop_at(n: int):
    """A progress callback that interrupts the run at its n-th call (after the n-th batch is on disk)."""
    calls = []

    def progress(desc, done, total):
        calls.append(done)
        if len(calls) == n:
            raise _Stop

    return progress


def test_an_interrupted_run_resumes_to_the_same_file_as_an_uninterrupted_one(tmp_path):
    cfg = make_config(tokens=150, length=12, batch_size=3, seed=5)
    whole = sample_text(load(TINY), tmp_path / "whole", cfg, device="cpu")
    assert whole["tokens"] >= 150 and whole["resumed_from"] is None
    with pytest.raises(_Stop):
        sample_text(load(TINY), tmp_path / "cut", cfg, device="cpu", progress=_stop_at(2))
    state = json.loads((tmp_path / "cut" / "samples.json").read_text())
    assert state["batches"] == 2 and not state["finished"]
    with open(tmp_path / "cut" / "text.jsonl", "ab") as f:
        f.write(b'{"text": "half a batch a kill left beh')  # a batch cut off mid-write
    with pytest.raises(OutputError, match="--resume"):
        sample_text(load(TINY), tmp_path / "cut", cfg, device="cpu")  # not without --resume
    res = sample_text(load(TINY), tmp_path / "cut", cfg, device="cpu", resume=True)
    assert res["resumed_from"] == state["tokens"]
    assert (tmp_path / "cut" / "text.jsonl").read_bytes() == (tmp_path / "whole" / "text.jsonl").read_bytes()
    assert res["rows"] == whole["rows"] and res["tokens"] == whole["tokens"]


def test_resume_cuts_only_a_batch_slimlm_was_writing_never_rows_a_user_appended(tmp_path):
    cfg = make_config(tokens=150, length=12, batch_size=3, seed=5)
    whole = sample_text(load(TINY), tmp_path / "whole", cfg, device="cpu")
    out = tmp_path / "cut"
    with pytest.raises(_Stop):
        sample_text(load(TINY), out, cfg, device="cpu", progress=_stop_at(2))
    recorded = (out / "text.jsonl").read_bytes()
    rows = json.loads((out / "samples.json").read_text())["rows"]
    # the next batch, written whole but not recorded (a kill between the write and samples.json), then half a row
    next_rows = (tmp_path / "whole" / "text.jsonl").read_bytes()[len(recorded):].split(b"\n")[:3]
    assert json.loads(next_rows[0])["row"] == rows
    unrecorded = b"\n".join(next_rows) + b"\n" + b'{"text": "cut off'
    for appended in (b'{"text": "my own row", "split": "train"}\n',  # a user's row, in the same JSON-lines form
                     json.dumps({"text": "x", "split": "train", "row": rows + 7, "prompt": ""}).encode() + b"\n",
                     unrecorded + b"\nmore text a user pasted\n"):
        (out / "text.jsonl").write_bytes(recorded + appended)
        with pytest.raises(OutputError, match="did not write"):
            sample_text(load(TINY), out, cfg, device="cpu", resume=True)
        assert (out / "text.jsonl").read_bytes() == recorded + appended  # nothing cut
    (out / "text.jsonl").write_bytes(recorded + b'{"te')  # cut within the first bytes of a row
    sample_text(load(TINY), out, cfg, device="cpu", resume=True, max_seconds=0)
    (out / "text.jsonl").write_bytes(recorded + unrecorded)
    sample_text(load(TINY), out, cfg, device="cpu", resume=True)
    assert (out / "text.jsonl").read_bytes() == (tmp_path / "whole" / "text.jsonl").read_bytes()
    assert whole["rows"] == json.loads((out / "samples.json").read_text())["rows"]


def test_resuming_with_a_larger_budget_extends_the_same_rows(tmp_path):
    small, big = make_config(tokens=60, length=10, batch_size=2), make_config(tokens=200, length=10, batch_size=2)
    sample_text(load(TINY), tmp_path / "a", small, device="cpu")
    first = (tmp_path / "a" / "text.jsonl").read_bytes()
    sample_text(load(TINY), tmp_path / "a", big, device="cpu", resume=True)
    sample_text(load(TINY), tmp_path / "b", big, device="cpu")
    grown = (tmp_path / "a" / "text.jsonl").read_bytes()
    assert grown.startswith(first) and len(grown) > len(first)
    assert grown == (tmp_path / "b" / "text.jsonl").read_bytes()
    assert json.loads((tmp_path / "a" / "samples.json").read_text())["finished"]


def test_another_seed_gives_other_text(tmp_path):
    sample_text(load(TINY), tmp_path / "a", make_config(tokens=40, length=10, batch_size=2, seed=0), device="cpu")
    sample_text(load(TINY), tmp_path / "b", make_config(tokens=40, length=10, batch_size=2, seed=1), device="cpu")
    assert (tmp_path / "a" / "text.jsonl").read_bytes() != (tmp_path / "b" / "text.jsonl").read_bytes()


def test_resume_refuses_other_settings_or_another_model(tmp_path):
    cfg = make_config(tokens=30, length=10, batch_size=2)
    sample_text(load(TINY), tmp_path / "s", cfg, device="cpu")
    with pytest.raises(ConfigError, match="top_p"):
        sample_text(load(TINY), tmp_path / "s", make_config(tokens=30, length=10, batch_size=2, top_p=0.5),
                    device="cpu", resume=True)
    with pytest.raises(ConfigError, match="another model"):
        sample_text(load(TINY.replace("seed=3", "seed=4")), tmp_path / "s", cfg, device="cpu", resume=True)


def test_never_writes_into_a_folder_it_did_not_write_and_force_replaces_only_its_own_files(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cfg = make_config(tokens=20, length=10, batch_size=2)
    for flags in ({}, {"force": True}, {"resume": True}):
        with pytest.raises(OutputError, match="did not write"):
            sample_text(load(TINY), foreign, cfg, device="cpu", **flags)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    ours = tmp_path / "ours"
    sample_text(load(TINY), ours, cfg, device="cpu")
    (ours / "README").write_text("the user's note beside the samples")
    before = (ours / "text.jsonl").read_bytes()
    sample_text(load(TINY), ours, make_config(tokens=20, length=10, batch_size=2, seed=9), device="cpu", force=True)
    assert (ours / "README").read_text() == "the user's note beside the samples"
    assert (ours / "text.jsonl").read_bytes() != before

    named_alike = tmp_path / "alike"  # a samples.json slimlm did not write, beside the user's text.jsonl
    named_alike.mkdir()
    for record in ("{}", "[1]"):
        (named_alike / "samples.json").write_text(record)
        (named_alike / "text.jsonl").write_text('{"text": "mine"}\n')
        for flags in ({"force": True}, {"resume": True}):
            with pytest.raises(OutputError, match="not a record slimlm generate wrote"):
                sample_text(load(TINY), named_alike, cfg, device="cpu", **flags)
        assert (named_alike / "text.jsonl").read_text() == '{"text": "mine"}\n'
        assert (named_alike / "samples.json").read_text() == record


def test_the_folder_reads_back_as_data_with_each_rows_split(tmp_path):
    res = sample_text(load(TINY), tmp_path / "s", make_config(tokens=400, length=8, batch_size=4), device="cpu")
    rows = [json.loads(line) for line in (tmp_path / "s" / "text.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(res["rows"]))
    assert all(r["split"] == split_of(r["row"]) for r in rows)
    corpus = load_data(str(tmp_path / "s"))
    for split in ("train", "calibration", "eval"):
        assert corpus.texts(split) == [r["text"] for r in rows if r["split"] == split and r["text"].strip()]
    assert not corpus.overlapping and not corpus.notes
    assert res["splits"] == {s: sum(r["split"] == s for r in rows) for s in ("train", "calibration", "eval")}


def test_an_unfinished_sample_says_so_when_read(tmp_path):
    cfg = make_config(tokens=400, length=8, batch_size=4)
    with pytest.raises(_Stop):
        sample_text(load(TINY), tmp_path / "s", cfg, device="cpu", progress=_stop_at(3))
    assert "unfinished" in " ".join(load_data(str(tmp_path / "s")).notes)


def test_prompts_are_windows_of_the_prompt_data(tmp_path, text_file):
    m = load(TINY)
    cfg = make_config(tokens=40, length=6, batch_size=4, prompt_data=str(text_file), prompt_tokens=5)
    sample_text(m, tmp_path / "s", cfg, device="cpu")
    rows = [json.loads(line) for line in (tmp_path / "s" / "text.jsonl").read_text().splitlines()]
    source = text_file.read_text()
    assert rows and all(r["prompt"] and r["prompt"] in source + source for r in rows)
    assert len({r["prompt"] for r in rows}) > 1  # random offsets, not one window


def test_the_model_comes_back_as_it_was(tmp_path):
    m = load(TINY)
    m.hf.train()
    before = {k: v.clone() for k, v in m.hf.state_dict().items()}
    sample_text(m, tmp_path / "s", make_config(tokens=20, length=5, batch_size=2, dtype="bfloat16"), device="cpu")
    assert m.hf.training
    after = m.hf.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_an_encoder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="causal"):
        sample_text(load("tiny:bert"), tmp_path / "s", make_config(tokens=10), device="cpu")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("bad,match", [({"top_p": 0}, "top_p"), ({"temperature": 0}, "temperature"),
                                       ({"prompt_tokens": 4}, "prompt_data"), ({"prompt_data": "pydoc"}, "prompt_tokens")])
def test_bad_settings_are_one_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        make_config(**bad)


def test_a_student_trained_only_on_its_teachers_samples_learns_what_the_teacher_knows(tmp_path, trained_teacher,
                                                                                       corpus):
    """Sequence-level KD: the teacher's samples alone (hard labels, no teacher logits) carry what it learnt from
    the plays, so a random student trained on them gets better on plays it never saw, close to the teacher."""
    sample_text(trained_teacher, tmp_path / "s", make_config(tokens=6000, length=64, batch_size=16, top_p=1.0),
                device="cpu")
    samples = load_data(str(tmp_path / "s"))
    student = load("tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=7")
    before = evaluate(student, corpus, seq_len=64, max_tokens=2048)["perplexity"]
    distill(student, None, samples, DistillConfig(loss="ce", alpha=1.0, steps=40, lr=5e-3, seq_len=64, batch_size=8,
                                                  warmup_steps=4))
    after = evaluate(student, corpus, seq_len=64, max_tokens=2048)["perplexity"]
    teacher = evaluate(trained_teacher, corpus, seq_len=64, max_tokens=2048)["perplexity"]
    assert after < 0.5 * before, (before, after, teacher)
    assert after < 1.5 * teacher, (before, after, teacher)


def test_cli_samples_then_distills_with_the_sample_as_general_data(tmp_path, capsys, text_file):
    from slimlm.cli.main import main

    capsys.readouterr()
    assert main(["generate", TINY, "--out", str(tmp_path / "s"), "--tokens", "300", "--length", "16",
                 "--batch-size", "4", "--seed", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tokens"] >= 300 and res["rows"] % 4 == 0 and res["device"] == "cpu" and res["threads"] >= 1
    assert res["settings"]["seed"] == 2 and res["model"]["spec"] == TINY
    assert main(["distill", TINY, "--teacher", TINY, "--data", str(text_file), "--general-data", str(tmp_path / "s"),
                 "--general-share", "0.5", "--steps", "2", "--seq-len", "16", "--batch-size", "2",
                 "--out", str(tmp_path / "student"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    # a second machine's sample (another seed, another folder) joins the first as one general corpus
    assert main(["generate", TINY, "--out", str(tmp_path / "s2"), "--tokens", "300", "--length", "16",
                 "--batch-size", "4", "--seed", "3", "--json"]) == 0
    capsys.readouterr()
    both = f"{tmp_path / 's'}+{tmp_path / 's2'}"
    one, two = (load_data(str(tmp_path / d)).texts("train") for d in ("s", "s2"))
    assert load_data(both).texts("train") == one + two and one != two
    assert main(["distill", TINY, "--teacher", TINY, "--data", str(text_file), "--general-data", both,
                 "--general-share", "0.5", "--steps", "2", "--seq-len", "16", "--batch-size", "2",
                 "--out", str(tmp_path / "student2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    assert main(["generate", TINY, "--out", str(tmp_path / "s"), "--tokens", "300", "--json"]) == 2  # no --resume
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [(["--top-p", "1.5"], "top_p"), (["--prompt-tokens", "4"], "prompt_data"),
                                        (["--prompt-data", "nope.txt", "--prompt-tokens", "4"], "does not exist"),
                                        (["--dtype", "half"], "dtype")])
def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, argv, match):
    from slimlm.cli.main import main

    capsys.readouterr()
    assert main(["generate", TINY, "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("spec,temperature,top_p", [(TINY, 1.0, 1.0), (TINY, 0.7, 0.9), ("tiny:qwen2", 1.0, 0.95),
                                                     ("tiny:qwen3", 1.0, 0.95), ("tiny:gemma2", 1.0, 0.95),
                                                     ("tiny:gemma3", 1.0, 0.95), ("tiny:mistral", 1.0, 0.95),
                                                     ("tiny:phi3", 1.0, 0.95)])
def test_draws_the_same_tokens_as_transformers_generate_with_the_same_settings_and_seed(spec, temperature, top_p):
    """Not a second opinion on sampling: with top-k off, the same seed gives the same rows as `generate`, on
    every supported decoder family (Gemma's soft-capped logits and sliding-window caches included)."""
    m = load(spec)
    prompts = torch.full((6, 1), 5, dtype=torch.long)
    cfg = make_config(temperature=temperature, top_p=top_p, length=20, batch_size=6)
    ours = sample_batch(m.hf, prompts, 20, cfg, eos=None, generator=torch.Generator().manual_seed(11))
    torch.manual_seed(11)
    with torch.no_grad():
        theirs = m.hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=0,
                               top_p=top_p, temperature=temperature, max_new_tokens=20, min_new_tokens=20,
                               eos_token_id=None, pad_token_id=0)
    assert [r for r in ours] == theirs[:, 1:].tolist()


def test_a_time_budget_stops_after_a_batch_and_resume_completes_the_same_file(tmp_path):
    cfg = make_config(tokens=60, length=10, batch_size=2, seed=4)
    whole = sample_text(load(TINY), tmp_path / "whole", cfg, device="cpu")
    assert whole["finished"]
    part = sample_text(load(TINY), tmp_path / "cut", cfg, device="cpu", max_seconds=0)
    assert not part["finished"] and part["rows"] == 2  # one batch, then the clock
    state = json.loads((tmp_path / "cut" / "samples.json").read_text())
    assert state["batches"] == 1 and not state["finished"]
    assert "unfinished" in load_data(str(tmp_path / "cut")).notes[0]
    res = sample_text(load(TINY), tmp_path / "cut", cfg, device="cpu", resume=True)
    assert res["finished"] and res["resumed_from"] == part["tokens"]
    assert (tmp_path / "cut" / "text.jsonl").read_bytes() == (tmp_path / "whole" / "text.jsonl").read_bytes()


def test_cli_time_budgets_stop_cleanly_and_resume_finishes(tmp_path, capsys, text_file):
    from slimlm.cli.main import main

    capsys.readouterr()
    gen = ["generate", TINY, "--out", str(tmp_path / "s"), "--tokens", "200", "--length", "10", "--batch-size", "2"]
    assert main([*gen, "--max-minutes", "1e-6", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert not res["finished"] and res["rows"] == 2
    assert main([*gen, "--max-minutes", "1e-6"]) == 2  # an unfinished folder is continued only with --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*gen, "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]

    out = tmp_path / "student"
    dist = ["distill", TINY, "--teacher", TINY, "--data", str(text_file), "--steps", "3", "--seq-len", "16",
            "--batch-size", "2", "--out", str(out)]
    assert main([*dist, "--max-minutes", "1e-6"]) == 0
    said = capsys.readouterr().out
    assert "stopped at the time budget after step 1 of 3" in said and "--resume" in said
    assert not out.exists() and (tmp_path / "student.checkpoint").is_dir()  # no half-trained variant at --out
    assert main([*dist, "--json"]) == 2  # the checkpoint is not overwritten without --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*dist, "--resume", "--max-minutes", "1e-6", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == {**res, "finished": False, "out_of_time": 2, "resumed_from": 1}
    assert main([*dist, "--resume", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["finished"] and res["resumed_from"] == 2 and res["steps"] == 3 and res["out_of_time"] is None
    assert (out / "slimlm.json").is_file() and not (tmp_path / "student.checkpoint").exists()


def test_cli_finetune_takes_a_time_budget_too(tmp_path, capsys, finetune_args):
    from slimlm.cli.main import main

    out = tmp_path / "clf"
    capsys.readouterr()
    assert main(finetune_args(out, "--steps", "3", "--max-minutes", "1e-6")) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["finished"] is False and res["out_of_time"] == 1 and not out.exists()
    assert main(finetune_args(out, "--steps", "3", "--resume")) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["finished"] and res["resumed_from"] == 1 and res["steps"] == 3 and (out / "slimlm.json").is_file()



@pytest.mark.parametrize("scale", [4.0, 1.0, 0.3])  # peaked to flat: the nucleus among the candidates or not
def test_nucleus_over_candidates_is_the_full_sorts_result(scale):
    logits = torch.randn(64, 2000, generator=torch.Generator().manual_seed(5)) * scale
    for top_p in (0.3, 0.9, 0.99):
        full = nucleus(logits, 0.8, top_p, candidates=2000)  # every row sorted over the whole vocabulary
        for k in (8, 64, 512):
            assert torch.equal(nucleus(logits, 0.8, top_p, candidates=k), full), (scale, top_p, k)


def test_nucleus_keeps_ties_at_the_cut_by_token_id_whatever_the_candidates():
    row = torch.tensor([3.0] + [0.0] * 9)  # one likely token, then nine tied ones
    p = torch.softmax(row, -1)
    top_p = float(p[0] + 2.5 * p[1])  # the nucleus: token 0 and the tied tokens 1, 2, 3
    for k in (2, 3, 5, 10):  # the candidates cut the tie group anywhere, or hold it all
        got = nucleus(row[None], 1.0, top_p, candidates=k)[0]
        assert (got > 0).tolist() == [True] * 4 + [False] * 6, k
