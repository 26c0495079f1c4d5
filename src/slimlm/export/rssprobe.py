"""Peak resident memory of one export in its runtime, measured in a fresh process.

``python -m slimlm.export.rssprobe RUNTIME FILE --shape 1x128 --decode 64 --threads 1 [--task encoder]`` loads
the export into ONNX Runtime, OpenVINO or llama.cpp (`slimlm.export.runtimes._Session`, the session the
latency protocol times), runs one prefill at the shape and, for a causal LM with a KV graph, one decode of
``--decode`` tokens, and prints JSON with the process's peak RSS (VmHWM) beside the RSS before and after
loading. As `slimlm.profile.memprobe` does for torch: in a shared process the peak belongs to whichever model
ran first, so each export gets its own process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from slimlm.profile.memprobe import die_with_parent, status_mb

    die_with_parent()
    p = argparse.ArgumentParser()
    p.add_argument("runtime")
    p.add_argument("path")
    p.add_argument("--task", default="causal-lm")
    p.add_argument("--shape", default="1x128")
    p.add_argument("--decode", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vocab", type=int, default=256, help="token ids are drawn below this")
    a = p.parse_args(argv)

    import torch

    from slimlm._quiet import quiet
    from slimlm.export.runtimes import _Session

    quiet()
    b, s = (int(x) for x in a.shape.split("x"))
    start = status_mb("VmRSS")
    sess = _Session(a.runtime, Path(a.path), a.threads, s + a.decode + 8, a.task)
    loaded = status_mb("VmRSS")
    sess.prefill(torch.randint(0, a.vocab, (b, s), generator=torch.Generator().manual_seed(0)))
    if a.decode and sess.decode is not None:
        sess.decode(a.decode)
    json.dump({"peak_rss_mb": status_mb("VmHWM"), "loaded_rss_mb": loaded, "start_rss_mb": start}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
