"""Peak resident memory of one model, measured in a fresh process.

``python -m slimlm.profile.memprobe DIR --shape 8x128 --decode 64 --threads 2`` loads the variant through
`slimlm.models.load`, runs one prefill at the shape and one decode, and prints JSON with the process's peak
RSS. A fresh process is the only honest way to compare variants: in a shared process the peak belongs to
whichever model ran first.
"""

from __future__ import annotations

import argparse
import json
import sys


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MiB (VmRSS now, VmHWM peak since this process's exec).

    VmHWM, not getrusage's ru_maxrss: the latter survives fork+exec and would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``).

    A probe whose parent was killed would otherwise keep a model in memory until it finished. The parent
    passes its pid in ``SLIMLM_PARENT_PID``; if it died before the prctl took effect we exit at once.
    """
    import ctypes
    import os
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: nothing to ask for
    parent = os.environ.get("SLIMLM_PARENT_PID")
    if parent and os.getppid() != int(parent):
        os._exit(1)


def run_probe(module: str, args: list[str]) -> dict:
    """Run module ``module`` with ``args`` (a probe that prints one JSON line) in a fresh process that dies with
    this one; its JSON, or ``{"peak_rss_mb": None, "error": [its last stderr line]}`` when it failed."""
    import os
    import subprocess

    # not `python -m`: it puts the working directory first on sys.path, and a user working inside a model
    # directory would have its .py files (an argparse.py, say) imported without --trust-remote-code
    code = ("import sys; sys.path[:] = [p for p in sys.path if p != '']; import runpy; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "SLIMLM_PARENT_PID": str(os.getpid())})
    if res.returncode != 0:
        return {"peak_rss_mb": None, "error": res.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--shape", default="1x128")
    p.add_argument("--decode", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)

    import torch

    from slimlm._quiet import quiet

    quiet()
    if a.threads:
        torch.set_num_threads(a.threads)
    from slimlm.models import load

    base = status_mb("VmRSS")
    model = load(a.path)
    loaded = status_mb("VmRSS")
    b, s = (int(x) for x in a.shape.split("x"))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.adapter.vocab_size, (b, s), generator=g)
    with torch.inference_mode():
        model.hf(ids)
        if a.decode and model.task == "causal-lm":
            model.hf.generate(ids[:1, :8], max_new_tokens=a.decode, min_new_tokens=a.decode, do_sample=False,
                              pad_token_id=model.tokenizer.pad_token_id)
    peak = status_mb("VmHWM")
    json.dump({"peak_rss_mb": peak, "loaded_rss_mb": loaded, "start_rss_mb": base}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
