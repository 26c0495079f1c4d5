"""Output paths and atomic directories: nothing of the user's is replaced, readers never see a gap."""

import os
import subprocess
import sys
import threading

import pytest

from slimlm._io import atomic_dir, check_out, remove_on_error, sweep, temp_path, write_text_atomic
from slimlm.errors import OutputError


def _variant(path, text="v1"):
    with atomic_dir(path) as tmp:
        (tmp / "slimlm.json").write_text("{}")
        (tmp / "weights").write_text(text)


def test_check_out_accepts_new_empty_and_own_outputs(tmp_path):
    assert check_out(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty")
    _variant(tmp_path / "v")
    with pytest.raises(OutputError, match="--force"):
        check_out(tmp_path / "v")
    check_out(tmp_path / "v", force=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    check_out(tmp_path / "run", kind="run")  # a run directory is resumed


@pytest.mark.parametrize("force", [False, True])
def test_check_out_refuses_what_slimlm_did_not_write(tmp_path, force):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "important.txt").write_text("years of work")
    (tmp_path / "file").write_text("x")
    for path, kind, msg in [(tmp_path / "thesis", "variant", "did not write"),
                            (tmp_path / "thesis", "run", "did not write"),
                            (tmp_path / "file", "variant", "existing file"),
                            (tmp_path / "file" / "sub", "variant", "is a file"),
                            ("/proc/slimlm-out", "variant", "not writable")]:
        with pytest.raises(OutputError, match=msg):
            check_out(path, force=force, kind=kind)
    assert (tmp_path / "thesis" / "important.txt").read_text() == "years of work"
    assert (tmp_path / "file").read_text() == "x"


def test_check_out_refuses_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_out(ro / "out")
    finally:
        ro.chmod(0o755)


def test_check_out_refuses_the_other_kind(tmp_path):
    _variant(tmp_path / "v")
    with pytest.raises(OutputError, match=r"holds a slimlm variant \(slimlm.json\), not a run directory"):
        check_out(tmp_path / "v", kind="run")
    with pytest.raises(OutputError, match="not a samples directory"):  # it read "not a samples"
        check_out(tmp_path / "v", kind="samples")


def test_atomic_dir_never_replaces_a_foreign_directory(tmp_path):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "important.txt").write_text("keep")
    with pytest.raises(OutputError):
        _variant(tmp_path / "thesis")
    assert (tmp_path / "thesis" / "important.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["thesis"]  # no temp directory left behind


def test_replacing_a_variant_leaves_no_moment_without_a_complete_directory(tmp_path):
    target = tmp_path / "v"
    _variant(target)
    stop, seen = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                seen.append((target / "weights").read_text())
            except FileNotFoundError:
                seen.append(None)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        _variant(target, f"v{i}")
    stop.set()
    t.join()
    assert None not in seen and len(seen) > 10
    assert (target / "weights").read_text() == "v199"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_files_and_dirs_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        _variant(tmp_path / "v")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "v").stat().st_mode & 0o777 == 0o755


def test_sweep_removes_only_stale_slimlm_temp_names(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    mine = temp_path(tmp_path / "x")
    mine.mkdir()
    stale = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{dead}-")
    stale.mkdir()
    (stale / "big").write_text("leftover")
    user = tmp_path / ".x.tmp"
    user.write_text("not ours")
    assert sweep(tmp_path) == [stale]
    assert mine.exists() and user.exists() and not stale.exists()


def test_remove_on_error_removes_only_what_the_block_created(tmp_path):
    with pytest.raises(ValueError), remove_on_error(tmp_path / "run"):
        (tmp_path / "run" / "cache").mkdir(parents=True)
        raise ValueError
    assert not (tmp_path / "run").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError), remove_on_error(tmp_path / "empty"):
        (tmp_path / "empty" / "run.json").write_text("{}")
        raise ValueError
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    with pytest.raises(ValueError), remove_on_error(tmp_path / "kept", keep=lambda: True):
        (tmp_path / "kept").mkdir()
        raise ValueError
    assert (tmp_path / "kept").is_dir()


def test_replacing_a_slimlm_output_never_deletes_files_the_user_put_in_it(tmp_path):
    """--force replaces what slimlm wrote; a note the user added beside it makes the replacement an error,
    before the work and again at the swap, and the note and the old output stay."""
    import json

    from slimlm._io import FILES_RECORD, foreign_entries

    v = tmp_path / "v"
    _variant(v)
    assert sorted(json.loads((v / FILES_RECORD).read_text())) == ["slimlm.json", "weights"]
    assert foreign_entries(v) == []
    check_out(v, force=True)
    _variant(v, "v2")  # only slimlm's entries: replaced
    assert (v / "weights").read_text() == "v2"
    (v / "NOTES.md").write_text("mine")
    with pytest.raises(OutputError, match="NOTES.md, which slimlm did not write"):
        check_out(v, force=True)
    with pytest.raises(OutputError, match="NOTES.md"):
        _variant(v, "v3")
    assert (v / "NOTES.md").read_text() == "mine" and (v / "weights").read_text() == "v2"


def test_replacing_a_slimlm_output_never_loses_an_edit_made_to_one_of_its_files(tmp_path):
    """The record holds each small file's checksum: an edited file stops --force before the work and at the
    swap (an edit made while the work ran); a record from before checksums (a list of names) still reads."""
    import json

    from slimlm._io import FILES_RECORD, edited_entries

    v = tmp_path / "v"
    _variant(v)
    assert edited_entries(v) == []
    (v / "weights").write_text("tuned by hand")
    with pytest.raises(OutputError, match="weights was changed since slimlm wrote it"):
        check_out(v, force=True)
    with pytest.raises(OutputError, match="weights was changed"):
        _variant(v, "v2")
    assert (v / "weights").read_text() == "tuned by hand"
    (v / FILES_RECORD).write_text(json.dumps(["slimlm.json", "weights"]))  # written before checksums
    assert edited_entries(v) == []
    check_out(v, force=True)
    _variant(v, "v3")
    assert (v / "weights").read_text() == "v3" and edited_entries(v) == []


def test_an_output_from_before_the_record_is_read_by_the_names_slimlm_writes(tmp_path):
    from slimlm._io import foreign_entries

    old = tmp_path / "old"
    old.mkdir()
    for name in ("slimlm.json", "config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "my-analysis.ipynb"):
        (old / name).write_text("{}")
    assert foreign_entries(old) == ["my-analysis.ipynb"]


def test_force_on_a_run_directory_keeps_what_the_user_added(tmp_path):
    from slimlm._io import prepare_run_dir

    run = tmp_path / "run"
    (run / "cache").mkdir(parents=True)
    for name in ("run.json", "variants.jsonl", "report.html", "decision.md"):
        (run / name).write_text("{}")
    (run / "my-analysis").mkdir()
    with pytest.raises(OutputError, match="my-analysis, which slimlm did not write"):
        prepare_run_dir(run, force=True)
    assert (run / "run.json").exists() and (run / "my-analysis").is_dir()
    (run / "my-analysis").rmdir()
    prepare_run_dir(run, force=True)  # slimlm's entries only: discarded
    assert not (run / "run.json").exists()



def _full_run(run):
    """A run directory with every folder slimlm writes in one: stage cache, checkpoint, locks, exports,
    decisions, monitor files."""
    import json

    from slimlm._io import FILES_RECORD, WRITTEN_RECORD

    for name in ("run.json", "variants.jsonl", "report.html", "decision.md"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")
    for d, files in {"cache/6da101948d96bf46": ["slimlm.json", "model.safetensors"],
                     "cache/.6da101948d96bf46.ckpt": ["meta.json", "state.pt"],
                     "exports/6da101948d96bf46-onnxruntime": ["export.json", "model.onnx"]}.items():
        (run / d).mkdir(parents=True)
        for f in files:
            (run / d / f).write_text("x")
        (run / d / FILES_RECORD).write_text(json.dumps(files))
    (run / "cache" / ".locks").mkdir()
    (run / "cache" / ".locks" / "6da101948d96bf46").write_text("")
    (run / "decisions").mkdir()
    (run / "decisions" / "0001.json").write_text("{}")
    (run / "monitor").mkdir()
    (run / "monitor" / "slimlm-rules.yml").write_text("groups: []")
    (run / "monitor" / WRITTEN_RECORD).write_text(json.dumps({"slimlm-rules.yml": "0" * 64}))


@pytest.mark.parametrize("mine", ["cache/NOTES.md", "cache/6da101948d96bf46/README.md", "cache/.locks/mine.txt",
                                  "cache/.6da101948d96bf46.ckpt/notes.txt", "exports/mine/x.txt",
                                  "exports/6da101948d96bf46-onnxruntime/notes.txt", "decisions/my-note.txt",
                                  "monitor/my-rules.yml"])
def test_force_on_a_run_directory_keeps_what_the_user_added_in_its_folders(tmp_path, mine):
    """--force discards a run only when nothing in it, inside its cache, exports, decisions and monitor
    folders too, is the user's."""
    from slimlm._io import foreign_entries, prepare_run_dir

    run = tmp_path / "run"
    _full_run(run)
    assert foreign_entries(run, "run") == []
    (run / mine).parent.mkdir(parents=True, exist_ok=True)
    (run / mine).write_text("mine")
    assert foreign_entries(run, "run") == [mine]
    with pytest.raises(OutputError, match=f"{mine}, which slimlm did not write"):
        prepare_run_dir(run, force=True)
    assert (run / mine).read_text() == "mine" and (run / "run.json").exists()
    (run / mine).unlink()
    prepare_run_dir(run, force=True)
    assert not run.exists()


def test_force_on_a_run_directory_keeps_an_export_file_the_user_edited(tmp_path):
    import hashlib
    import json

    from slimlm._io import FILES_RECORD, foreign_entries, prepare_run_dir

    run = tmp_path / "run"
    _full_run(run)
    export = run / "exports" / "6da101948d96bf46-onnxruntime"
    x = hashlib.sha256(b"x").hexdigest()
    (export / FILES_RECORD).write_text(json.dumps({"export.json": x, "model.onnx": x}))  # with checksums
    assert foreign_entries(run, "run") == []
    (export / "export.json").write_text('{"tuned": "by hand"}')
    assert foreign_entries(run, "run") == ["exports/6da101948d96bf46-onnxruntime/export.json (edited)"]
    with pytest.raises(OutputError, match=r"export.json \(edited\), which slimlm did not write \(or you edited"):
        prepare_run_dir(run, force=True)
    assert (export / "export.json").read_text() == '{"tuned": "by hand"}'


def test_a_failed_fresh_run_keeps_its_directory_when_the_user_added_files(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError), remove_on_error(run):
        (run / "cache").mkdir(parents=True)
        (run / "run.json").write_text("{}")
        (run / "NOTES.md").write_text("mine")  # written by the user while the run worked
        raise ValueError
    assert (run / "NOTES.md").read_text() == "mine"


def test_an_export_from_before_the_record_is_read_by_its_manifest(tmp_path):
    """An export's export.json lists its files: anything else in the folder is the user's, whatever its name
    (a user's vocab.txt or notes.bin would pass the name patterns)."""
    import json

    from slimlm._io import foreign_entries

    old = tmp_path / "old"
    old.mkdir()
    (old / "export.json").write_text(json.dumps({"format": "gguf", "files": {"model-f16.gguf": 10}}))
    for name in ("model-f16.gguf", "vocab.txt", "notes.bin"):
        (old / name).write_text("x")
    assert foreign_entries(old) == ["notes.bin", "vocab.txt"]


def test_an_edited_file_slimlm_rewrites_is_kept_unless_forced(tmp_path):
    from slimlm._io import check_unedited, record_written

    f, g = tmp_path / "decision.md", tmp_path / "report.html"
    f.write_text("slimlm's")
    g.write_text("slimlm's")
    check_unedited([f, g])  # no record yet (a run from before it): taken as slimlm's
    record_written([f, g])
    check_unedited([f, g])
    f.write_text("slimlm's\nSIGNED OFF BY ALICE\n")
    with pytest.raises(OutputError, match="decision.md was changed since slimlm wrote it"):
        check_unedited([f, g])
    check_unedited([f, g], force=True)


@pytest.mark.parametrize("kind", ["variant", "run", "samples"])
def test_the_working_directory_and_its_parents_are_never_an_output(tmp_path, monkeypatch, kind):
    from slimlm._io import prepare_run_dir

    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for out in (".", "..", str(tmp_path / "here"), "./"):
        with pytest.raises(OutputError, match="current directory|above the current one"):
            check_out(out, kind=kind, force=True)
    with pytest.raises(OutputError, match="current directory"):
        prepare_run_dir(".", force=True)
    assert check_out("new", kind=kind).name == "new"  # a new directory under it is fine
    with pytest.raises(OutputError):
        temp_path(".")


def test_saved_weights_are_readable_as_the_umask_allows(tmp_path):
    """safetensors writes its files 0600: a variant saved by one account could not be served by another."""
    import os
    import stat

    from slimlm.models import load, save

    mask = os.umask(0o022)
    os.umask(mask)
    save(load("tiny:llama?layers=1"), tmp_path / "v")
    for p in (tmp_path / "v").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p.name
