"""A data-parallel distillation worker for tests: ``torch.multiprocessing.spawn(worker, ...)`` with gloo.

It lives in the package (not in the test file) so that spawned processes can import it by name.
"""

from __future__ import annotations

import os


def worker(rank: int, world: int, init_file: str, out_file: str, cfg_json: str, teacher_spec: str,
           student_spec: str, budgets: list[float] | None = None, checkpoint_dir: str | None = None) -> None:
    """``budgets``: each rank's own time budget (``max_seconds``), with ``checkpoint_dir``; rank 0 writes
    ``{"weights", "tokens", "losses", "out_of_time"}`` to ``out_file``."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from slimlm.distill import DistillConfig, distill_run
        from slimlm.models import load
        from slimlm.testing.students import small_corpus

        cfg = DistillConfig.model_validate_json(cfg_json)
        teacher, student = load(teacher_spec), load(student_spec)
        res = distill_run(student, teacher, small_corpus(), cfg, checkpoint_dir=checkpoint_dir,
                          max_seconds=budgets[rank] if budgets else None)
        if rank == 0:
            torch.save({"weights": student.hf.state_dict(), "tokens": res.tokens,
                        "losses": [h["loss"] for h in res.history], "out_of_time": res.out_of_time}, out_file)
    finally:
        dist.destroy_process_group()
