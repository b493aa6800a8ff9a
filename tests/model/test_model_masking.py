"""Token selection: random masks, top-k of the teacher priority, Gumbel top-k, and restoring positions."""

from __future__ import annotations

import torch

from tgdp.model.cavmae_sync import take_tokens
from tgdp.model.config import keep_count
from tgdp.model.masking import gather_visible, guided_order, priority_order, random_order


def _positions(b: int, n: int) -> torch.Tensor:
    """[B, N, 2] tokens whose features are (sample, position): lets a test read back where a token came from."""
    pos = torch.arange(n, dtype=torch.float32).expand(b, n)
    return torch.stack([torch.arange(b, dtype=torch.float32)[:, None].expand(b, n), pos], dim=-1)


def test_keep_count_released_and_round() -> None:
    assert keep_count(208, 0.75) == 52 and keep_count(196, 0.75) == 49
    assert keep_count(208, 0.5) == 104 and keep_count(196, 0.5) == 98
    assert keep_count(208, 0.65) == 72 and keep_count(208, 0.65, "round") == 73
    assert keep_count(196, 0.0) == 196


def test_topk_keeps_highest_priority_positions() -> None:
    torch.manual_seed(0)
    b, n, k = 4, 50, 13
    prio = torch.rand(b, n)
    ids = priority_order(prio)[:, :k]
    kept = take_tokens(_positions(b, n), ids)
    kept_pos = kept[..., 1].long()
    assert torch.equal(kept[..., 0].long(), torch.arange(b)[:, None].expand(b, k))
    expected = prio.topk(k, dim=1).indices
    assert torch.equal(kept_pos.sort(1).values, expected.sort(1).values)
    # every kept priority is >= every dropped one
    kept_mask = torch.zeros_like(prio, dtype=torch.bool).scatter_(1, kept_pos, True)
    kept_min = prio.masked_fill(~kept_mask, float("inf")).min(1).values
    dropped_max = prio.masked_fill(kept_mask, float("-inf")).max(1).values
    assert (kept_min >= dropped_max).all()


def test_gumbel_at_zero_temperature_equals_distinct() -> None:
    torch.manual_seed(1)
    prio = torch.softmax(torch.randn(6, 40), dim=1)
    distinct = guided_order(prio, "distinct")[:, :10]
    gumbel = guided_order(prio, "probabilistic", tau=1e-6)[:, :10]
    assert torch.equal(distinct, gumbel)
    # at tau=1 it samples: several draws differ from top-k but stay valid permutations
    g = torch.Generator().manual_seed(0)
    draws = [guided_order(prio, "probabilistic", tau=1.0, generator=g) for _ in range(3)]
    assert any(not torch.equal(d[:, :10].sort(1).values, distinct.sort(1).values) for d in draws)
    for d in draws:
        assert torch.equal(d.sort(1).values, torch.arange(40).expand(6, 40))


def test_gumbel_follows_priority_on_average() -> None:
    g = torch.Generator().manual_seed(0)
    prio = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).expand(2000, 4)
    first = guided_order(prio, "probabilistic", tau=1.0, generator=g)[:, 0]
    frac = (first == 0).float().mean().item()
    assert 0.65 < frac < 0.75  # Gumbel-max draws index 0 with probability 0.7


def test_gather_visible_mask_and_restore() -> None:
    torch.manual_seed(2)
    b, n, keep = 3, 20, 5
    x = _positions(b, n)
    order = random_order(b, n, "cpu")
    vis, mask, restore = gather_visible(x, order, keep)
    assert vis.shape == (b, keep, 2) and mask.shape == (b, n)
    assert mask.sum(1).tolist() == [n - keep] * b
    kept_pos = vis[..., 1].long()
    assert (torch.gather(mask, 1, kept_pos) == 0).all()
    # cat(visible, placeholders) gathered by ids_restore puts each token back at its own position
    full = torch.cat([vis, torch.full((b, n - keep, 2), -1.0)], dim=1)
    back = take_tokens(full, restore)
    vis_slots = mask == 0
    assert torch.equal(back[..., 1][vis_slots], torch.arange(n, dtype=torch.float32).expand(b, n)[vis_slots])
    assert (back[..., 1][~vis_slots] == -1).all()
