"""What every refusal test checks: exit code 2 and exactly one ``error:`` line, no traceback, nothing written."""


def error_line(code: int, err: str) -> str:
    """Assert ``code`` is 2 and ``err`` holds one ``error:`` message and no traceback; return the message as one
    line (rich may wrap it over several)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(errors) == 1, err
    return " ".join(" ".join(lines[lines.index(errors[0]):]).split())


def snapshot(root) -> dict:
    """Every path under ``root`` with its mode, size and mtime: equal before and after means nothing was written."""
    import os
    from pathlib import Path

    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out
