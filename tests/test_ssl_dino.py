"""simlabel.ssl.dino: the loss, centring, EMA, schedules and monitors against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simlabel.ssl.dino import (
    DINOHead,
    cancel_last_layer_gradients,
    clip_gradients,
    collapse_monitors,
    cosine_schedule,
    dino_loss,
    ema_update,
    teacher_temperature_schedule,
    update_center,
)


def _logits(p: list[float], temp: float) -> list[float]:
    """Logits whose softmax at ``temp`` is ``p``."""
    return [temp * math.log(x) for x in p]


def _ce(q, p) -> float:
    return -sum(a * math.log(b) for a, b in zip(q, p))


def test_loss_two_view_sum_and_temperatures_by_hand():
    # teacher (global) views 0 and 1 sharpen to q0 = (3/4, 1/4), q1 = (1/2, 1/2) at tau_t = 0.04 after
    # subtracting the centre; student views 0, 1, 2 soften to p0, p1, p2 at tau_s = 0.1.
    ts, tt = 0.1, 0.04
    c = torch.tensor([[0.3, -0.2]])
    q = [(0.75, 0.25), (0.5, 0.5)]
    p = [(2 / 3, 1 / 3), (1 / 3, 2 / 3), (0.5, 0.5)]
    teacher = torch.tensor([[a + c[0, 0].item(), b + c[0, 1].item()] for a, b in (_logits(x, tt) for x in q)])
    student = torch.tensor([_logits(x, ts) for x in p])
    # same-view pairs (t0, s0) and (t1, s1) are excluded: four pairs remain
    expected = (_ce(q[0], p[1]) + _ce(q[0], p[2]) + _ce(q[1], p[0]) + _ce(q[1], p[2])) / 4
    got = dino_loss(student, teacher, c, n_student_views=3, n_teacher_views=2, student_temp=ts, teacher_temp=tt)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    total = dino_loss(student, teacher, c, n_student_views=3, n_teacher_views=2, student_temp=ts, teacher_temp=tt,
                      reduction="sum")
    assert float(total) == pytest.approx(4 * expected, rel=1e-5)
    # eq. 3 as printed: teacher on other views than the student's, nothing shared -> 2 x 3 pairs
    every = dino_loss(student, teacher, c, n_student_views=3, n_teacher_views=2, student_temp=ts, teacher_temp=tt,
                      shared_views=0, reduction="sum")
    assert float(every) == pytest.approx(sum(_ce(a, b) for a in q for b in p), rel=1e-5)


def test_loss_batches_average_over_items():
    s = torch.randn(3 * 4, 5)
    t = torch.randn(2 * 4, 5)
    c = torch.zeros(1, 5)
    whole = dino_loss(s, t, c, n_student_views=3, n_teacher_views=2)
    parts = []
    for b in range(4):
        sb = s.view(3, 4, 5)[:, b]
        tb = t.view(2, 4, 5)[:, b]
        parts.append(float(dino_loss(sb, tb, c, n_student_views=3, n_teacher_views=2)))
    assert float(whole) == pytest.approx(np.mean(parts), rel=1e-5)


def test_loss_needs_a_pair():
    with pytest.raises(ValueError, match="no .teacher view, student view. pair"):
        dino_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(1, 3), n_student_views=1, n_teacher_views=1)


@settings(max_examples=40, deadline=None)
@given(shift=st.floats(-5, 5), seed=st.integers(0, 10_000))
def test_loss_invariances(shift, seed):
    g = torch.Generator().manual_seed(seed)
    s, t, c = torch.randn(6, 7, generator=g), torch.randn(4, 7, generator=g), torch.randn(1, 7, generator=g)
    base = dino_loss(s, t, c, n_student_views=3, n_teacher_views=2)
    # softmax ignores a constant added to every logit of a row: the student's, or teacher and centre together
    assert float(dino_loss(s + shift, t, c, n_student_views=3, n_teacher_views=2)) == pytest.approx(float(base), abs=1e-4)
    assert float(dino_loss(s, t + shift, c, n_student_views=3, n_teacher_views=2)) == pytest.approx(float(base), abs=1e-4)
    assert float(base) >= 0
    # cross-entropy is at least the teacher's entropy: a student copying the teacher is optimal
    q = torch.softmax((t - c) / 0.04, -1)
    same = dino_loss(torch.log(q.clamp_min(1e-30)).repeat(1, 1) * 0.1, t, c, n_student_views=2, n_teacher_views=2,
                     shared_views=0)
    ent = float(-(q * torch.log(q.clamp_min(1e-30))).sum(-1).mean())
    assert float(same) >= ent - 1e-4


def test_center_update_by_hand():
    c = torch.tensor([[1.0, 1.0]])
    update_center(c, torch.tensor([[0.0, 2.0], [2.0, 4.0]]), momentum=0.9)
    assert c[0].tolist() == pytest.approx([1.0, 1.2])


def test_ema_update_by_hand_and_paper_form():
    teacher, student = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    ema_update(teacher, student, 0.75)
    assert teacher.weight.item() == pytest.approx(1.5)  # 0.75 * 1 + 0.25 * 3
    # the paper's phi <- lambda theta + (1 - lambda) phi with lambda = 1 - m
    lam = 1 - 0.75
    assert teacher.weight.item() == pytest.approx(lam * 3.0 + (1 - lam) * 1.0)
    ema_update(teacher, student, 1.0)
    assert teacher.weight.item() == pytest.approx(1.5)
    ema_update(teacher, student, 0.0)
    assert teacher.weight.item() == pytest.approx(3.0)


def test_schedules_by_hand():
    assert cosine_schedule(1.0, 0.0, 4).tolist() == pytest.approx([1.0, 0.5 * (1 + math.sqrt(0.5)), 0.5, 0.5 * (1 - math.sqrt(0.5))])
    warm = cosine_schedule(1.0, 0.0, 6, warmup_steps=2)
    assert warm[:2].tolist() == pytest.approx([0.0, 0.5]) and warm[2] == pytest.approx(1.0)
    assert teacher_temperature_schedule(0.04, 0.07, 5, 3).tolist() == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07])
    m = cosine_schedule(0.996, 1.0, 100)
    assert m[0] == pytest.approx(0.996) and np.all(np.diff(m) >= 0) and m[-1] < 1.0


def test_clip_gradients_per_tensor():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])
    m = torch.nn.Module()
    m.a, m.b = a, b
    clip_gradients(m, 1.0)
    assert a.grad.tolist() == pytest.approx([0.6, 0.8], rel=1e-5)
    assert b.grad.tolist() == pytest.approx([0.3, 0.4])


def test_head_weight_norm_and_frozen_last_layer():
    torch.manual_seed(0)
    head = DINOHead(8, 32, hidden_dim=16, bottleneck_dim=4)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 32)
    # rows of the last layer have unit norm (g = 1), and its input is L2-normalised: |logit| <= 1
    assert out.abs().max() <= 1 + 1e-5
    out.sum().backward()
    cancel_last_layer_gradients(head)
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert head.mlp[0].weight.grad is not None


def test_collapse_monitors():
    k = 16
    uniform = collapse_monitors(torch.zeros(8, k), torch.zeros(1, k), 0.04)
    assert uniform["entropy"] == pytest.approx(math.log(k)) and uniform["kl_uniform"] == pytest.approx(0, abs=1e-6)
    one_hot = torch.zeros(8, k)
    one_hot[:, 3] = 10.0
    collapsed = collapse_monitors(one_hot, torch.zeros(1, k), 0.04)
    assert collapsed["entropy"] < 1e-3 and collapsed["kl_uniform"] == pytest.approx(math.log(k), abs=1e-3)
    assert collapse_monitors(one_hot, torch.ones(1, k), 0.04)["center_norm"] == pytest.approx(4.0)
