from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.losses import (
    binary_focal_loss,
    focal_loss,
    kl_to_targets,
    smoothing_loss,
    soft_cross_entropy,
    weighted_cross_entropy,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny: an OpenMP team per op costs more than the op, badly so on a busy
    # 2-core machine (ms per call). Restored afterwards, as the thread count is process-wide.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


LOGITS = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
TARGET = [1, 0]


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(LOGITS, dtype=torch.float64), torch.tensor(TARGET)


def _np_focal(logits, target, gamma, alpha_t) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    pt = p[np.arange(len(target)), target]
    return -np.asarray(alpha_t) * (1 - pt) ** gamma * np.log(pt)


# --------------------------------------------------------------------------- focal


def test_focal_matches_numpy_by_hand() -> None:
    z, y = _tiny()
    ref = _np_focal(LOGITS, TARGET, 2.0, 1.0)
    # sample 0: p_t = e^2 / (e + e^2 + e^0.5) ~ 0.629; sample 1: p_t = e^0.2 / (...) ~ 0.0560
    assert ref[0] == pytest.approx(-(1 - 0.62853) ** 2 * np.log(0.62853), rel=1e-3)
    out = focal_loss(z, y, reduction="none")
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12)
    assert focal_loss(z, y).item() == pytest.approx(ref.mean(), rel=1e-12)
    assert focal_loss(z, y, reduction="sum").item() == pytest.approx(ref.sum(), rel=1e-12)
    # a float alpha multiplies every sample
    np.testing.assert_allclose(focal_loss(z, y, alpha=0.25, reduction="none").numpy(), 0.25 * ref, rtol=1e-12)
    # gamma = 1.5 as well: the power is not special-cased for integers
    np.testing.assert_allclose(
        focal_loss(z, y, gamma=1.5, reduction="none").numpy(), _np_focal(LOGITS, TARGET, 1.5, 1.0), rtol=1e-12
    )


def test_focal_gamma_zero_is_cross_entropy_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 7, generator=g)
    y = torch.randint(0, 7, (64,), generator=g)
    for red in ("none", "mean", "sum"):
        assert torch.equal(focal_loss(z, y, gamma=0.0, reduction=red), F.cross_entropy(z, y, reduction=red))


def test_focal_down_weights_easy_samples() -> None:
    z, y = _tiny()
    ce = F.cross_entropy(z, y, reduction="none")
    fl = focal_loss(z, y, reduction="none")
    assert (fl < ce).all()
    # the easy sample (p_t ~ 0.63) loses much more of its loss than the hard one (p_t ~ 0.06)
    ratio = fl / ce
    assert ratio[0] < 0.2 < 0.8 < ratio[1]


def test_focal_alpha_per_class() -> None:
    z, y = _tiny()
    alpha = torch.tensor([0.1, 0.7, 0.2], dtype=torch.float64)
    ref = _np_focal(LOGITS, TARGET, 2.0, alpha.numpy()[TARGET])  # alpha_t = alpha[y] = [0.7, 0.1]
    np.testing.assert_allclose(focal_loss(z, y, alpha=alpha, reduction="none").numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(z, y, alpha=torch.ones(4))


def test_focal_gradients_finite_even_when_saturated() -> None:
    z = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 3.0], [0.3, -0.2, 0.1]], requires_grad=True)
    y = torch.tensor([0, 0, 2])
    for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
        z.grad = None
        loss = focal_loss(z, y, gamma=gamma)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all(), gamma
        # the confident correct sample gets no gradient; the confident wrong one does
        assert torch.all(z.grad[0] == 0) and z.grad[1].abs().sum() > 0


def test_focal_validation() -> None:
    z, y = _tiny()
    with pytest.raises(ValueError, match="2-D"):
        focal_loss(z[0], y)
    with pytest.raises(ValueError, match="length n=2"):
        focal_loss(z, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        focal_loss(z, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        focal_loss(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(z, y, reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="weight"):
        focal_loss(z, y, weight=torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        focal_loss(z, y, weight=torch.tensor([1.0, -1.0]))


# --------------------------------------------------------------------------- binary focal


def _np_binary_focal(logits, targets, gamma, alpha) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    t = np.asarray(targets, dtype=float)
    p = 1 / (1 + np.exp(-z))
    pt = p * t + (1 - p) * (1 - t)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    at = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return (at * (1 - pt) ** gamma * bce).sum(1)


def test_binary_focal_matches_numpy() -> None:
    z = torch.tensor([[2.0, -1.0, 0.3, 0.0], [-3.0, 0.5, 1.5, -0.7]], dtype=torch.float64)
    hard = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    soft = torch.tensor([[0.9, 0.1, 0.6, 0.0], [0.2, 0.5, 1.0, 0.7]], dtype=torch.float64)
    # hard targets: alpha_t (1 - p_t)^gamma (-log p_t), Lin's eq. 5 per label
    p = torch.sigmoid(z)
    pt = p * hard + (1 - p) * (1 - hard)
    at = 0.6 * hard + 0.4 * (1 - hard)
    eq5 = (-at * (1 - pt) ** 2 * torch.log(pt)).sum(1)
    np.testing.assert_allclose(binary_focal_loss(z, hard, reduction="none").numpy(), eq5.numpy(), rtol=1e-12)
    for t in (hard, soft):
        for gamma, alpha in ((2.0, 0.6), (0.5, 0.25), (2.0, None)):
            out = binary_focal_loss(z, t, gamma=gamma, alpha=alpha, reduction="none")
            np.testing.assert_allclose(out.numpy(), _np_binary_focal(z.numpy(), t.numpy(), gamma, alpha), rtol=1e-10)


def test_binary_focal_gamma_zero_no_alpha_is_bce() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 5, generator=g)
    t = (torch.rand(16, 5, generator=g) > 0.5).float()
    bce = F.binary_cross_entropy_with_logits(z, t, reduction="none").sum(1)
    torch.testing.assert_close(binary_focal_loss(z, t, gamma=0.0, alpha=None, reduction="none"), bce)
    torch.testing.assert_close(binary_focal_loss(z, t, gamma=0.0, alpha=None), bce.mean())


def test_binary_focal_saturated_gradients_finite() -> None:
    z = torch.tensor([[1e4, -1e4, 30.0], [-1e4, 1e4, -30.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    for gamma in (0.0, 0.5, 2.0):
        z.grad = None
        loss = binary_focal_loss(z, t, gamma=gamma)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all(), gamma
    with pytest.raises(ValueError, match="shape of logits"):
        binary_focal_loss(z, t[:, :2])


# --------------------------------------------------------------------------- soft targets


def test_one_hot_soft_targets_give_cross_entropy() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (10,), generator=g)
    onehot = F.one_hot(y, 6).double()
    ce = F.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(soft_cross_entropy(z, onehot, reduction="none"), ce)
    # KL(t || p) = H(t, p) - H(t), and the entropy of a one-hot row is 0
    torch.testing.assert_close(kl_to_targets(z, onehot, reduction="none"), ce - 0)


def test_kl_non_negative_and_zero_at_prediction() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(20, 5, generator=g, dtype=torch.float64)
    t = torch.softmax(torch.randn(20, 5, generator=g, dtype=torch.float64), -1)
    assert (kl_to_targets(z, t, reduction="none") >= 0).all()
    assert kl_to_targets(z, torch.softmax(z, -1), reduction="none").abs().max() < 1e-12
    # soft cross-entropy = entropy + KL
    ent = -(t * t.log()).sum(1)
    torch.testing.assert_close(soft_cross_entropy(z, t, reduction="none"), ent + kl_to_targets(z, t, reduction="none"))


def test_kl_zero_probability_targets() -> None:
    # 0 log 0 = 0, also against a saturated logit (log p = -inf would give 0 * -inf = nan)
    z = torch.tensor([[0.0, 1.0, -float("inf")]], requires_grad=True)
    t = torch.tensor([[0.5, 0.5, 0.0]])
    loss = kl_to_targets(z, t)
    loss.backward()
    p = torch.softmax(z.detach()[:, :2], -1)
    assert loss.item() == pytest.approx((0.5 * (np.log(0.5) - p.log())).sum().item())
    assert torch.isfinite(z.grad).all()
    assert torch.isfinite(soft_cross_entropy(z, t))


def test_kl_temperature() -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, 4, generator=g, dtype=torch.float64)
    t = torch.softmax(torch.randn(8, 4, generator=g, dtype=torch.float64), -1)
    temp = 3.0
    # T^2 * KL(t || softmax(z / T))
    expected = temp**2 * kl_to_targets(z / temp, t, reduction="none")
    torch.testing.assert_close(kl_to_targets(z, t, temperature=temp, reduction="none"), expected)
    assert kl_to_targets(z, torch.softmax(z / temp, -1), temperature=temp).abs() < 1e-12
    # with the T^2 factor, d/dz T^2 KL(t || softmax(z/T)) = T (softmax(z/T) - t)
    zg = z.clone().requires_grad_(True)
    kl_to_targets(zg, t, temperature=temp, reduction="sum").backward()
    torch.testing.assert_close(zg.grad, temp * (torch.softmax(z / temp, -1) - t))
    with pytest.raises(ValueError, match="temperature"):
        kl_to_targets(z, t, temperature=0.0)


# --------------------------------------------------------------------------- weights


def test_weights_and_reductions() -> None:
    z, y = _tiny()
    per = focal_loss(z, y, reduction="none")
    w = torch.tensor([2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(focal_loss(z, y, weight=w, reduction="none"), w * per)
    torch.testing.assert_close(focal_loss(z, y, weight=w, reduction="sum"), (w * per).sum())
    torch.testing.assert_close(focal_loss(z, y, weight=w), (w * per).sum() / w.sum())
    # zero weight removes the sample: the same as leaving it out
    w0 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for fn in (
        lambda **kw: focal_loss(z, y, **kw),
        lambda **kw: weighted_cross_entropy(z, y, kw.pop("weight"), **kw),
        lambda **kw: soft_cross_entropy(z, F.one_hot(y, 3).double(), **kw),
        lambda **kw: kl_to_targets(z, torch.softmax(z.flip(0), -1), **kw),
        lambda **kw: binary_focal_loss(z, (z > 0.6).double(), **kw),
        lambda **kw: smoothing_loss(z, y, torch.full_like(z, 1 / 3), **kw),
    ):
        full = fn(weight=w0, reduction="none")
        assert full[0] == 0
        torch.testing.assert_close(fn(weight=w0), full[1])
        torch.testing.assert_close(fn(weight=torch.ones(2, dtype=torch.float64)), fn(weight=None))


def test_all_zero_weights_give_zero_not_nan() -> None:
    z = torch.tensor(LOGITS, requires_grad=True)
    loss = focal_loss(z, torch.tensor(TARGET), weight=torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z.grad == 0)


def test_weighted_cross_entropy() -> None:
    z, y = _tiny()
    ce = F.cross_entropy(z, y, reduction="none")
    s = torch.tensor([0.9, 0.3], dtype=torch.float64)  # paper 003: text-matching score s(x_i)
    torch.testing.assert_close(weighted_cross_entropy(z, y, s, reduction="none"), s * ce)
    torch.testing.assert_close(weighted_cross_entropy(z, y, s), (s * ce).sum() / s.sum())
    assert torch.equal(weighted_cross_entropy(z, y, None), F.cross_entropy(z, y))


# --------------------------------------------------------------------------- smoothing


def test_smoothing_loss_combines_hard_and_kl() -> None:
    z, y = _tiny()
    # a 3-class soft-target matrix: each label keeps 0.8 and spreads 0.2 over its neighbours
    S = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]], dtype=torch.float64)
    rows = S[y]
    fl = focal_loss(z, y, reduction="none")
    kl = kl_to_targets(z, rows, temperature=2.0, reduction="none")
    assert torch.equal(smoothing_loss(z, y, rows, kl_weight=0.0, reduction="none"), fl)
    torch.testing.assert_close(
        smoothing_loss(z, y, rows, kl_weight=0.5, temperature=2.0, reduction="none"), fl + 0.5 * kl
    )
    ce = F.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(
        smoothing_loss(z, y, rows, loss="ce", temperature=2.0, reduction="none"), ce + kl
    )
    alpha = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(
        smoothing_loss(z, y, rows, alpha=alpha, kl_weight=0.0, reduction="none"), alpha[y] * fl
    )
    with pytest.raises(ValueError, match="soft_targets_rows"):
        smoothing_loss(z, y, S[:2, :2])
    with pytest.raises(ValueError, match="'focal' or 'ce'"):
        smoothing_loss(z, y, rows, loss="mse")


def test_smoothing_loss_trains_towards_neighbours() -> None:
    # Minimising the objective puts the leftover probability on the semantic neighbours.
    torch.manual_seed(0)
    S = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.3, 0.7, 0.0, 0.0], [0.0, 0.0, 0.7, 0.3], [0.0, 0.0, 0.3, 0.7]])
    y = torch.tensor([0, 1, 2, 3])
    z = torch.zeros(4, 4, requires_grad=True)
    opt = torch.optim.SGD([z], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        smoothing_loss(z, y, S[y], loss="ce", kl_weight=1.0).backward()
        opt.step()
    p = torch.softmax(z.detach(), -1)
    assert torch.equal(p.argmax(1), y)
    assert p[0, 1] > 10 * p[0, 2] and p[2, 3] > 10 * p[2, 0]


# --------------------------------------------------------------------------- properties


@st.composite
def _batch(draw):
    n = draw(st.integers(1, 6))
    c = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 1e3]))
    rng = np.random.default_rng(seed)
    z = torch.tensor(rng.normal(size=(n, c)) * scale)
    y = torch.tensor(rng.integers(0, c, n))
    raw = rng.random((n, c)) * (rng.random((n, c)) > 0.3)  # with exact zeros
    raw[np.arange(n), y.numpy()] += 0.5
    t = torch.tensor(raw / raw.sum(1, keepdims=True))
    w = torch.tensor(rng.random(n))
    gamma = draw(st.sampled_from([0.0, 0.5, 2.0]))
    return z, y, t, w, gamma


@settings(max_examples=60, deadline=None)
@given(_batch())
def test_losses_finite_and_non_negative(batch) -> None:
    z, y, t, w, gamma = batch
    z = z.requires_grad_(True)
    losses = {
        "focal": focal_loss(z, y, gamma=gamma, reduction="none"),
        "binary": binary_focal_loss(z, t, gamma=gamma, reduction="none"),
        "soft_ce": soft_cross_entropy(z, t, reduction="none"),
        "kl": kl_to_targets(z, t, temperature=2.0, reduction="none"),
        "smooth": smoothing_loss(z, y, t, gamma=gamma, weight=w, reduction="none"),
        "wce": weighted_cross_entropy(z, y, w, reduction="none"),
    }
    for name, v in losses.items():
        assert v.shape == (len(y),), name
        assert torch.isfinite(v).all(), name
        # KL can be a rounding error below 0 when t ~ softmax(z)
        assert (v >= -1e-9).all(), name
    total = sum(v.sum() for v in losses.values())
    total.backward()
    assert torch.isfinite(z.grad).all()
