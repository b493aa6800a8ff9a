"""Loss terms: InfoNCE directions, masked MSE, distillation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tgdp.model.losses import contrastive_loss, distillation_loss, mae_loss


def test_contrastive_equal_logits_is_log_b() -> None:
    b = 6
    g = torch.ones(b, 8)  # every cosine is 1: uniform softmax
    for symmetric in (False, True):
        assert math.isclose(contrastive_loss(g, g.clone(), 0.05, symmetric).item(), math.log(b), rel_tol=1e-6)


def test_contrastive_single_is_video_to_audio_and_symmetric_averages() -> None:
    torch.manual_seed(0)
    a, v = torch.randn(5, 16), torch.randn(5, 16)
    s = F.normalize(a, dim=-1) @ F.normalize(v, dim=-1).t() / 0.05  # S[i, j] = a_i · v_j
    released = -torch.diagonal(torch.log_softmax(s, dim=0)).mean()  # CAV-MAE Sync: softmax over audios
    assert torch.allclose(contrastive_loss(a, v, 0.05, symmetric=False), released, atol=1e-5)
    a2v = -torch.diagonal(torch.log_softmax(s, dim=1)).mean()
    assert torch.allclose(contrastive_loss(a, v, 0.05, symmetric=True), 0.5 * (a2v + released), atol=1e-5)
    assert not torch.allclose(a2v, released)
    # scale invariance (L2 normalisation) and gather=False without torch.distributed
    assert torch.allclose(contrastive_loss(3 * a, v, 0.05, gather=True), released, atol=1e-5)


def test_contrastive_perfect_alignment_is_low() -> None:
    x = torch.eye(4, 8) * 5
    assert contrastive_loss(x, x, 0.05).item() < 1e-6


def test_mae_loss_counts_masked_patches_only() -> None:
    pred = torch.zeros(1, 4, 3)
    target = torch.tensor([[[1.0, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]])
    mask = torch.tensor([[1.0, 0, 1, 0]])
    assert math.isclose(mae_loss(pred, target, mask, norm_pix=False).item(), (1 + 9) / 2)
    # norm_pix: constant patches standardise to 0
    assert mae_loss(pred, target, mask, norm_pix=True).item() < 1e-6
    t2 = torch.tensor([[[0.0, 1, 2]]])
    z = (t2 - 1) / (1.0 + 1e-6) ** 0.5  # unbiased var of (0,1,2) is 1
    assert math.isclose(mae_loss(torch.zeros(1, 1, 3), t2, torch.ones(1, 1), True).item(), z.pow(2).mean().item())


def test_distillation_sums_modalities_and_stops_grad() -> None:
    g_a, g_v = torch.zeros(2, 4, requires_grad=True), torch.zeros(2, 4, requires_grad=True)
    t_a, t_v = torch.ones(2, 4, requires_grad=True), 2 * torch.ones(2, 4)
    loss = distillation_loss(g_a, g_v, t_a, t_v)
    assert math.isclose(loss.item(), 1.0 + 4.0)
    loss.backward()
    assert t_a.grad is None and g_a.grad is not None


def _gather_worker(rank: int, world: int, init_file: str, a, v, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        b = a.shape[0] // world
        la = a[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        lv = v[rank * b : (rank + 1) * b].clone()
        loss = contrastive_loss(la, lv, 0.05, symmetric=True, gather=True)
        loss.backward()
        out[rank] = torch.cat([loss.detach().reshape(1), la.grad.reshape(-1)])
        # both ranks finish their collectives before either tears gloo down: tearing down while the peer's
        # backward all-reduce is still in flight aborted the process ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_negatives_match_global_batch(tmp_path) -> None:
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    a, v = torch.randn(8, 16), torch.randn(8, 16)
    out = torch.zeros(2, 1 + 4 * 16).share_memory_()
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), a, v, out), nprocs=2, join=True)
    # each rank scores its local queries against the global batch: the mean over ranks is the global loss
    a_full = a.clone().requires_grad_(True)
    full = contrastive_loss(a_full, v, 0.05, symmetric=True)
    full.backward()
    assert torch.allclose(out[:, 0].mean(), full.detach(), atol=1e-5)
    # all_gather's backward sums every rank's loss into the local rows: W × the global-mean gradient
    grads = out[:, 1:].reshape(8, 16)
    assert torch.allclose(grads, 2 * a_full.grad, atol=1e-5)
