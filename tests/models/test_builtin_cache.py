"""The builtin model's converted copy in the user cache: made once, made again when the conversion changes."""

import json

import pytest

from slimlm.models import loading


@pytest.fixture
def fake_builtin(tmp_path, monkeypatch):
    """`_smollm2_dir` with the GGUF reading replaced by a tiny model (the real conversion takes ~20 s)."""
    from slimlm.models.tiny import build_tiny

    calls = []

    def read(path):
        calls.append(path)
        return build_tiny("tiny:llama?layers=1")

    monkeypatch.setenv("SLIMLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_package_dir", lambda *a: tmp_path)
    monkeypatch.setattr(loading, "_load_gguf", read)
    return calls


def test_the_builtin_is_converted_once_and_again_when_the_conversion_changes(fake_builtin):
    target = loading._smollm2_dir()
    assert len(fake_builtin) == 1
    meta = json.loads((target / loading.META_FILE).read_text())
    assert meta["conversion"] == loading.CONVERSION_REV
    assert loading._smollm2_dir() == target and len(fake_builtin) == 1  # cached
    del meta["conversion"]  # a copy made before the digit-split fix
    (target / loading.META_FILE).write_text(json.dumps(meta))
    notes = []
    assert loading._smollm2_dir(progress=notes.append) == target and len(fake_builtin) == 2
    assert "again" in notes[0]
    assert json.loads((target / loading.META_FILE).read_text())["conversion"] == loading.CONVERSION_REV
