"""simlabel.optim.AdamW runs torch's own Adam/AdamW maths without building a torch.optim.Optimizer."""

from __future__ import annotations

import pytest
import torch

from simlabel.optim import AdamW


def _trajectory(make_opt, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = make_opt(model.parameters())
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("decoupled, wd", [(True, 1e-2), (False, 0.0), (False, 1e-3)])
def test_same_trajectory_as_torch_optim(decoupled: bool, wd: float) -> None:
    ours = _trajectory(lambda p: AdamW(p, lr=0.01, weight_decay=wd, decoupled=decoupled))
    reference_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    fused = _trajectory(lambda p: reference_cls(p, lr=0.01, weight_decay=wd, fused=True))
    loop = _trajectory(lambda p: reference_cls(p, lr=0.01, weight_decay=wd))
    for a, b, c in zip(ours, fused, loop):
        assert torch.equal(a, b)  # the same kernel: bit for bit
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)  # torch's for-loop: the same maths


def test_one_step_by_hand() -> None:
    """Adam's first step moves each weight by lr * sign(grad) (m / sqrt(v) = g / |g|)."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = AdamW([w], lr=0.1, weight_decay=0.0)
    (w * torch.tensor([3.0, -1.0, 0.0])).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9, 0.5]), rtol=0, atol=1e-6)


def test_decoupled_weight_decay_shrinks_without_gradient() -> None:
    """AdamW: w <- w (1 - lr wd) before the Adam step, which is 0 for a zero gradient."""
    w = torch.nn.Parameter(torch.tensor([2.0]))
    opt = AdamW([w], lr=0.1, weight_decay=0.5)
    (w * 0.0).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([2.0 * (1 - 0.05)]))


def test_building_one_does_not_import_dynamo() -> None:
    import subprocess
    import sys

    code = ("import sys, torch\nfrom simlabel.optim import AdamW\nw = torch.nn.Parameter(torch.ones(2))\n"
            "o = AdamW([w], lr=0.1)\nw.sum().backward(); o.step()\nprint('torch._dynamo' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
