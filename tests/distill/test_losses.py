"""Each distillation loss against a reference formula written out longhand on random tensors."""

import math

import pytest
import torch

from slimlm.distill.losses import (
    HiddenTransfer,
    attention_kl,
    causal_ce,
    class_kd_loss,
    group_heads,
    hidden_loss,
    kd_loss,
    mix,
    relation_loss,
    teacher_topk,
    topk_kd_loss,
)

torch.manual_seed(0)


def ref_kl(p, q):
    """KL(p||q) for probability vectors, summed per row in float64."""
    p, q = p.double(), q.double()
    return (p * (p.log() - q.log())).sum(-1)


def probs(logits, T):
    return torch.softmax(logits.double() / T, -1)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_forward_and_reverse_kl_match_reference(T):
    s, t = torch.randn(3, 7, 13) * 2, torch.randn(3, 7, 13) * 2
    ps, pt = probs(s, T), probs(t, T)
    fwd = kd_loss(s, t, temperature=T, direction="forward")
    rev = kd_loss(s, t, temperature=T, direction="reverse")
    assert fwd.item() == pytest.approx(ref_kl(pt, ps).mean().item() * T * T, rel=1e-5)
    assert rev.item() == pytest.approx(ref_kl(ps, pt).mean().item() * T * T, rel=1e-5)
    assert fwd.item() != pytest.approx(rev.item(), rel=1e-3)  # the two directions differ on random inputs


def test_t_squared_keeps_gradient_scale():
    # Hinton et al.: the soft-target gradient scales as 1/T^2, the T^2 factor restores it (large T limit)
    s, t = torch.randn(64, 50) * 0.1, torch.randn(64, 50) * 0.1
    norms = []
    for T in (4.0, 8.0):
        x = s.clone().requires_grad_()
        kd_loss(x, t, temperature=T).backward()
        norms.append(x.grad.norm().item())
    # d loss / d s = T * (p_s - p_t) and (p_s - p_t) ~ (s - t) / (T * V) for large T: the T^2-scaled
    # gradient does not depend on T (unscaled, it would shrink 4x from T=4 to T=8)
    assert norms[0] == pytest.approx(norms[1], rel=0.05)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_matches_reference(beta):
    s, t = torch.randn(4, 9) * 3, torch.randn(4, 9) * 3
    ps, pt = probs(s, 1.0), probs(t, 1.0)
    m = beta * pt + (1 - beta) * ps
    ref = (beta * ref_kl(pt, m) + (1 - beta) * ref_kl(ps, m)).mean()
    got = kd_loss(s, t, direction="jsd", beta=beta)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert 0 <= got.item() <= math.log(2) + 1e-6  # bounded, unlike KL


def test_jsd_slides_between_forward_and_reverse():
    s, t = torch.randn(8, 11), torch.randn(8, 11)
    fwd, rev = kd_loss(s, t).item(), kd_loss(s, t, direction="reverse").item()
    for beta, target in ((1e-4, fwd), (1 - 1e-4, rev)):
        scaled = kd_loss(s, t, direction="jsd", beta=beta).item() / (beta * (1 - beta))
        assert scaled == pytest.approx(target, rel=1e-2)


def test_mask_counts_only_selected_positions():
    s, t = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :3] = True
    assert kd_loss(s, t, mask=mask).item() == pytest.approx(kd_loss(s[0, :3], t[0, :3]).item(), rel=1e-6)


def test_identical_logits_give_zero():
    x = torch.randn(5, 17)
    for d in ("forward", "reverse", "jsd"):
        assert kd_loss(x, x.clone(), direction=d).item() == pytest.approx(0.0, abs=1e-6)


def test_causal_ce_and_mix_match_reference():
    logits, ids = torch.randn(2, 5, 10), torch.randint(0, 10, (2, 5))
    ref = []
    for b in range(2):
        for i in range(4):
            ref.append(-torch.log_softmax(logits[b, i].double(), -1)[ids[b, i + 1]])
    ce = causal_ce(logits, ids)
    assert ce.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-6)
    kd = torch.tensor(2.0)
    assert mix(ce, kd, 0.3).item() == pytest.approx(0.3 * ce.item() + 0.7 * 2.0, rel=1e-6)
    assert mix(ce, None, 1.0).item() == pytest.approx(ce.item())
    assert mix(None, kd, 0.0).item() == pytest.approx(2.0)


def test_topk_equals_forward_kl_at_full_vocab_and_reference_below():
    s, t = torch.randn(3, 4, 20), torch.randn(3, 4, 20)
    v, i = teacher_topk(t, 20)
    assert topk_kd_loss(s, v, i, temperature=2.0).item() == pytest.approx(
        kd_loss(s, t, temperature=2.0).item(), rel=1e-5)
    k, T = 5, 1.5
    v, i = teacher_topk(t, k)
    ref = []
    for row_s, row_t in zip(s.reshape(-1, 20), t.reshape(-1, 20), strict=False):
        top = row_t.double().topk(k).indices
        pt = torch.softmax(row_t.double()[top] / T, -1)
        ls = torch.log_softmax(row_s.double() / T, -1)[top]
        ref.append((pt * (pt.log() - ls)).sum())
    got = topk_kd_loss(s, v.half(), i.int(), temperature=T)  # cached dtypes: fp16 values, int32 ids
    assert got.item() == pytest.approx(torch.stack(ref).mean().item() * T * T, rel=2e-3)


def test_hidden_losses_match_reference():
    s, t = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    assert hidden_loss(s, t, "cosine").item() == pytest.approx((1 - cos).mean().item(), rel=1e-5)
    rel_mse = ((s - t) ** 2).mean(-1) / (t ** 2).mean(-1)
    assert hidden_loss(s, t, "mse").item() == pytest.approx(rel_mse.mean().item(), rel=1e-5)


def test_hidden_transfer_layer_map_and_projection():
    sh = [torch.randn(2, 3, 4) for _ in range(3)]  # embeddings + 2 student blocks, width 4
    th = [torch.randn(2, 3, 6) for _ in range(5)]  # embeddings + 4 teacher blocks, width 6
    ht = HiddenTransfer([(0, 1), (1, 3)], 4, 6, kind="cosine")
    assert ht.proj is not None and ht.proj[0].weight.shape == (6, 4)
    ref = (hidden_loss(ht.proj[0](sh[1]), th[2]) + hidden_loss(ht.proj[1](sh[2]), th[4])) / 2
    out = ht(sh, th)
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    out.backward()
    assert ht.proj[0].weight.grad.abs().sum() > 0  # the projection learns
    assert HiddenTransfer([(0, 0)], 6, 6).proj is None  # equal widths: no projection


def test_attention_kl_with_head_groups():
    B, T = 2, 4
    t = torch.softmax(torch.randn(B, 4, T, T), -1)
    s = torch.softmax(torch.randn(B, 2, T, T), -1)
    g = group_heads(t, 2)
    assert torch.allclose(g[:, 0], (t[:, 0] + t[:, 1]) / 2)
    ref = ref_kl(g, s).mean()
    assert attention_kl(s, t).item() == pytest.approx(ref.item(), rel=1e-4)
    # causal masking: zeros in both rows contribute nothing
    causal = torch.tril(torch.ones(T, T))
    tc = (t * causal).div((t * causal).sum(-1, keepdim=True))
    sc = (s * causal).div((s * causal).sum(-1, keepdim=True))
    gt = group_heads(tc, 2).double()
    terms = torch.where(gt > 0, gt * (gt.clamp_min(1e-300).log() - sc.double().clamp_min(1e-300).log()), 0.0)
    ref_c = terms.sum(-1).mean()
    assert attention_kl(sc, tc).item() == pytest.approx(ref_c.item(), rel=1e-3, abs=1e-6)


def test_relation_loss_matches_reference_and_ignores_width():
    fs, ft = torch.randn(5, 4), torch.randn(5, 9)
    def G(f):
        g = (f @ f.T).double()
        return g / g.norm(dim=1, keepdim=True)
    ref = ((G(fs) - G(ft)) ** 2).sum() / 25
    assert relation_loss(fs, ft).item() == pytest.approx(ref.item(), rel=1e-5)
    assert relation_loss(ft, ft).item() == pytest.approx(0.0, abs=1e-7)


def test_class_kd_loss_mixes_ce_and_kl():
    s, t, y = torch.randn(6, 3), torch.randn(6, 3), torch.randint(0, 3, (6,))
    T, a = 2.0, 0.25
    ce = torch.nn.functional.cross_entropy(s.double(), y)
    kl = ref_kl(probs(t, T), probs(s, T)).mean() * T * T
    got = class_kd_loss(s, t, y, temperature=T, alpha=a)
    assert got.item() == pytest.approx((a * ce + (1 - a) * kl).item(), rel=1e-5)
