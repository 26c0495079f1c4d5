"""The one check every refusal shares: exit code 2 and exactly one ``error:`` line, no traceback."""


def error_line(code: int, err: str) -> str:
    """Assert ``code`` is 2 and ``err`` holds one ``error:`` message and no traceback; return the message as one
    line (rich may wrap it over several)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(errors) == 1, err
    return " ".join(" ".join(lines[lines.index(errors[0]):]).split())
