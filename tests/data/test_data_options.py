"""``file.jsonl?text=body&label=y``: the options of a data spec are checked, not dropped when mistyped."""

import json

import pytest

from slimlm.data import load_data
from slimlm.errors import SpecError


@pytest.fixture()
def body_jsonl(tmp_path):
    p = tmp_path / "b2.jsonl"
    p.write_text("\n".join(json.dumps({"body": f"row {i} of the data", "y": "ab"[i % 2]}) for i in range(4)))
    return p


@pytest.mark.parametrize("query,bad", [("txt=body", "txt"), ("text=body&lable=y", "lable"), ("Text=body", "Text")])
def test_an_unknown_option_is_named_with_the_valid_ones(body_jsonl, query, bad):
    with pytest.raises(SpecError) as exc:
        load_data(f"{body_jsonl}?{query}")
    msg = str(exc.value)
    assert f"unknown option {bad!r}" in msg and "valid options: text, label" in msg
    assert "\n" not in msg and "empty" not in msg


@pytest.mark.parametrize("query", ["text=", "text", "text=body&label="])
def test_an_option_without_a_field_name_is_refused(body_jsonl, query):
    with pytest.raises(SpecError, match="has no value"):
        load_data(f"{body_jsonl}?{query}")


def test_valid_options_still_pick_the_fields(body_jsonl):
    c = load_data(f"{body_jsonl}?text=body&label=y")
    assert c.texts("eval")[0] == "row 0 of the data" and c.labels == ["a", "b"]


def test_options_on_a_file_without_fields_are_refused(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("plain text has no fields to name")
    with pytest.raises(SpecError, match=r"name the fields of a \.jsonl/\.csv file"):
        load_data(f"{p}?text=body")
    assert load_data(str(p)).texts("eval") == ["plain text has no fields to name"]


def test_a_mistyped_option_in_one_part_of_a_join_is_named(tmp_path, body_jsonl):
    p = tmp_path / "t.txt"
    p.write_text("plain text")
    with pytest.raises(SpecError, match="unknown option 'txt'"):
        load_data(f"{p}+{body_jsonl}?txt=body")


def test_a_join_whose_first_part_has_options_is_a_join(tmp_path, body_jsonl):
    """``a.jsonl?text=body+b.txt`` used to be read as the single file a.jsonl (the text before the first '?'
    exists), silently dropping b.txt; a file whose own name has a '+' is still one file."""
    other = tmp_path / "t.txt"
    other.write_text("plain text beside the rows")
    joined = load_data(f"{body_jsonl}?text=body+{other}")
    texts = [t for split in ("train", "calibration", "eval") for t in joined.texts(split)]
    assert "plain text beside the rows" in texts and any(t.startswith("row ") for t in texts)
    plus = tmp_path / "a+b.txt"
    plus.write_text("one file")
    assert load_data(str(plus)).texts("eval") == ["one file"]


def test_absolute_spec_makes_each_local_path_absolute_and_keeps_the_rest(tmp_path, monkeypatch):
    from slimlm.data.corpus import absolute_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jsonl").write_text("{}")
    assert absolute_spec("shakespeare") == "shakespeare"
    assert absolute_spec("a.txt") == str(tmp_path / "a.txt")
    assert absolute_spec("b.jsonl?text=body&label=y") == f"{tmp_path / 'b.jsonl'}?text=body&label=y"
    assert absolute_spec("a.txt+pydoc") == f"{tmp_path / 'a.txt'}+pydoc"
    assert absolute_spec("missing.txt") == "missing.txt"  # left for load_data to refuse by the name given


def test_files_as_users_save_them_read_back_exactly(tmp_path):
    """Found by an audit: a quoted CSV field lost its line breaks, a JSONL text with U+2028 (legal in JSON) was
    cut mid-string, and a byte-order mark (Excel's "CSV UTF-8") emptied a CSV and stayed in a text file."""
    from slimlm.data import load_data

    (tmp_path / "multi.csv").write_text('text,label\n"Good, really good\nsecond line",pos\n"bad\fone",neg\n',
                                        newline="")
    assert load_data(str(tmp_path / "multi.csv")).texts("eval") == ["Good, really good\nsecond line", "bad\fone"]
    line = json.dumps({"text": "one\u2028two\u0085three"}, ensure_ascii=False)
    (tmp_path / "u.jsonl").write_text(line + "\n", encoding="utf-8")
    assert load_data(str(tmp_path / "u.jsonl")).texts("eval") == ["one\u2028two\u0085three"]
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\nhello,pos\nbye,neg\n".encode())
    bom = load_data(str(tmp_path / "bom.csv"))
    assert bom.texts("eval") == ["hello", "bye"] and bom.labels == ["neg", "pos"]
    (tmp_path / "bom.jsonl").write_bytes("\ufeff".encode() + b'{"text": "hi"}\n')
    assert load_data(str(tmp_path / "bom.jsonl")).texts("eval") == ["hi"]
    (tmp_path / "bom.txt").write_bytes("\ufeffTo be".encode())
    assert load_data(str(tmp_path / "bom.txt")).texts("eval") == ["To be"]
    (tmp_path / "UPPER.TXT").write_text("shouting")
    assert load_data(str(tmp_path / "UPPER.TXT")).texts("eval") == ["shouting"]


def test_integer_labels_keep_their_numeric_order_and_one_class_per_number(tmp_path):
    from slimlm.data import load_data

    rows = [{"text": f"t{i}", "label": i % 12} for i in range(24)] + [{"text": "x", "label": 1.0}]
    (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = load_data(str(tmp_path / "l.jsonl"))
    assert c.labels == [str(i) for i in range(12)]  # 2 before 10, not "10" before "2"
    assert [d.label for d in c.split("eval")] == [i % 12 for i in range(24)] + [1]  # 1.0 is class 1
    (tmp_path / "l.csv").write_text("text,label\na,1\nb,1.0\nc,2.50\nd,0\n")  # CSV values are all text
    c = load_data(str(tmp_path / "l.csv"))
    assert c.labels == ["0", "1", "2.50"] and [d.label for d in c.split("eval")] == [1, 1, 2, 0]


@pytest.mark.parametrize("rows, spec_tail, match", [
    ([{"text": "a", "label": "x"}, {"text": "b"}], "", "row 2 has none"),
    ([{"text": "a", "y": 1}, {"text": "b", "y": 0}], "?label=nope", "no 'nope' field"),
    ([{"text": "a", "split": "train"}, {"text": "b", "split": "validation"}], "", "row 2 has split 'validation'"),
])
def test_labels_and_splits_that_would_be_read_wrong_are_refused(tmp_path, rows, spec_tail, match):
    from slimlm.data import load_data
    from slimlm.errors import DataError

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=match):
        load_data(str(tmp_path / "d.jsonl") + spec_tail)


def test_a_corpus_without_splits_says_its_evaluation_is_not_held_out(tmp_path):
    from slimlm.data import load_data

    (tmp_path / "a.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    assert "not held out" in load_data(str(tmp_path / "a.jsonl")).held_out_note()
    (tmp_path / "b.jsonl").write_text('{"text": "a", "split": "train"}\n{"text": "b", "split": "eval"}\n')
    assert load_data(str(tmp_path / "b.jsonl")).held_out_note() is None
