"""Two gloo processes train exactly like one process with the same global batch (gradient accumulation)."""

import torch
import torch.multiprocessing as mp

from slimlm.distill import DistillConfig, distill_run
from slimlm.models import load
from slimlm.testing.ddp import worker
from slimlm.testing.students import small_corpus

TEACHER = "tiny:llama?layers=2&hidden=32&heads=2&kv_heads=1&ffn=64&seed=3"
STUDENT = "tiny:llama?layers=1&hidden=32&heads=2&kv_heads=1&ffn=64&seed=4"


def test_two_processes_match_one_process_with_accumulation(tmp_path):
    ddp_cfg = DistillConfig(steps=4, lr=3e-3, seq_len=32, batch_size=2, grad_accum=1, hidden_weight=1.0)
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out), ddp_cfg.model_dump_json(), TEACHER, STUDENT),
             nprocs=2, join=True)
    got = torch.load(out, weights_only=True)

    single = load(STUDENT)
    init = {k: v.clone() for k, v in single.hf.state_dict().items()}
    cfg = ddp_cfg.model_copy(update={"grad_accum": 2})  # the same 4 rows per step, in one process
    res = distill_run(single, load(TEACHER), small_corpus(), cfg)
    assert got["tokens"] == res.tokens == 4 * 4 * 32
    for k, v in single.hf.state_dict().items():
        assert torch.allclose(got["weights"][k], v, atol=2e-5), k
    assert any(not torch.equal(init[k], v) for k, v in single.hf.state_dict().items())
    # rank 0's logged loss is its own half of the batch, so compare the trained weights, not the losses


def test_ranks_stop_at_the_same_step_when_one_runs_out_of_time(tmp_path):
    """Rank 1's budget is spent at once, rank 0's never: both stop after step 1 (a rank that went on alone
    would wait forever in the next gradient all-reduce), and rank 0 writes the checkpoint."""
    cfg = DistillConfig(steps=4, lr=3e-3, seq_len=32, batch_size=2)
    out = tmp_path / "rank0.pt"
    ctx = mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out), cfg.model_dump_json(), TEACHER, STUDENT,
                                 [3600.0, 0.0], str(tmp_path / "ckpt")), nprocs=2, join=False)
    try:
        for _ in range(120):  # a rank left waiting would hang: give up after two minutes
            if ctx.join(timeout=1):
                break
        else:
            raise AssertionError("the ranks did not agree on where to stop")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    got = torch.load(out, weights_only=True)
    assert got["out_of_time"] == 1 and len(got["losses"]) == 1
    assert (tmp_path / "ckpt").is_dir()
