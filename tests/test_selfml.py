"""SELF-ML's method (paper 004, simlabel.labels.selfml): sparsemax, explainable reconstruction, basis labels,
the direct rule, joint training. The job and its explanations are tested in test_flipping.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simlabel.labels.selfml import (
    SelfMLConfig,
    basis_query,
    basis_vectors,
    coefficients,
    correct_labels,
    direct_rule,
    fit_reconstruction,
    fit_selfml,
    label_basis_from_clean,
    predict_scores,
    sparsemax,
    used_basis,
)
from simlabel.training import multilabel_pretrain

# Tiny models: single-threaded is faster than OpenMP hand-offs on a shared 2-core machine.
torch.set_num_threads(1)

PATTERNS = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 0, 1, 1], [0, 0, 1, 1, 0]], dtype=np.uint8)
FAST = dict(n_basis=32, pretrain_epochs=15, flip_pretrain_epochs=40, joint_steps=300, log_every=100)


def make_data(seed: int = 0, n: int = 900, d: int = 16, noise: float = 0.35):
    """4 clusters in d dims (unit rows), each with a label pattern over 5 labels.

    Noisy labels drop each positive with probability 0.6, and label 4 is never given for
    cluster 0 (a systematic miss, like the paper's jackets never labeled "long sleeved").
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(PATTERNS), d)).astype(np.float32)
    k = rng.integers(0, len(PATTERNS), n)
    X = (centers[k] + noise * rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = PATTERNS[k]
    Yn = np.where(rng.random(Y.shape) < 0.6, 0, Y).astype(np.uint8)
    Yn[k == 0, 4] = 0
    return X, Y, Yn, k


TRAIN, CLEAN, TEST = slice(0, 500), slice(500, 580), slice(580, 900)


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def recon(data):
    X, *_ = data
    return fit_reconstruction(X[TRAIN], SelfMLConfig(**FAST))


@pytest.fixture(scope="module")
def baseline(data):
    """The classifier pre-trained on the noisy rows (what SELF-ML starts from)."""
    X, _, Yn, _ = data
    return multilabel_pretrain(SelfMLConfig(**FAST))(X[TRAIN], Yn[TRAIN])


@pytest.fixture(scope="module")
def result(data, baseline):
    X, Y, Yn, _ = data
    return fit_selfml(X[TRAIN], Yn[TRAIN], X[CLEAN], Yn[CLEAN], Y[CLEAN], SelfMLConfig(**FAST), classifier=baseline)


# --------------------------------------------------------------------------- sparsemax


def test_sparsemax_hand_case():
    z = torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    p = sparsemax(z)
    expected = torch.tensor([[0.75, 0.25, 0.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(p, expected)
    assert p[0, 2].item() == 0.0 and p[2, 1].item() == 0.0  # exact zeros, not tiny numbers
    torch.testing.assert_close(p.sum(dim=-1), torch.ones(3))


def test_sparsemax_dim_and_gradient():
    z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sparsemax(z.T, dim=0), sparsemax(z).T)
    assert torch.autograd.gradcheck(lambda t: sparsemax(t * 3.0), (z.requires_grad_(),))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=st.floats(-50, 50)))
def test_sparsemax_on_simplex(z):
    p = sparsemax(torch.from_numpy(z)).numpy()
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    # The largest logit always keeps some mass.
    assert (p[np.arange(len(z)), z.argmax(axis=1)] > 0).all()


# --------------------------------------------------------------------------- reconstruction


def test_coefficients_convex_and_sparse(data, recon):
    X, *_ = data
    C = coefficients(recon, X[TEST])
    assert C.shape == (len(X[TEST]), 32) and C.dtype == np.float32
    assert (C >= 0).all()
    np.testing.assert_allclose(C.sum(axis=1), 1.0, atol=1e-5)
    assert (C == 0).mean() > 0.5  # sparsemax: most coefficients exactly 0
    used = used_basis(C)
    assert 0 < len(used) <= 32 and np.array_equal(used, np.flatnonzero((C > 1e-6).any(axis=0)))


def test_reconstruction_error_falls(recon):
    errors = [h["recon_huber"] for h in recon.history]
    assert len(errors) == FAST["pretrain_epochs"] + 1  # epoch 0 is before training
    assert errors[0] > errors[-1]
    assert basis_vectors(recon).shape == (32, 16)


def test_softmax_variant_is_convex(data):
    X, *_ = data
    cfg = SelfMLConfig(n_basis=8, sparsity="softmax", pretrain_epochs=2)
    model = fit_reconstruction(X[:100], cfg)
    C = coefficients(model, X[:50])
    assert (C > 0).all()  # softmax is never exactly sparse
    np.testing.assert_allclose(C.sum(axis=1), 1.0, atol=1e-5)


def test_reconstruction_is_deterministic(data):
    X, *_ = data
    cfg = SelfMLConfig(n_basis=8, pretrain_epochs=2)
    a, b = fit_reconstruction(X[:100], cfg), fit_reconstruction(X[:100], cfg)
    np.testing.assert_array_equal(basis_vectors(a), basis_vectors(b))


def test_n_basis_clipped_to_rows(data):
    X, *_ = data
    model = fit_reconstruction(X[:10], SelfMLConfig(n_basis=1000, pretrain_epochs=1))
    assert basis_vectors(model).shape == (10, 16)


def test_config_validation():
    with pytest.raises(ValueError, match="sparsity"):
        SelfMLConfig(sparsity="dense")
    with pytest.raises(ValueError, match="clean_share"):
        SelfMLConfig(clean_share=1.0)


# --------------------------------------------------------------------------- basis labels and direct rule


def test_label_basis_from_clean_picks_nearest():
    X_clean = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    Y_clean = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.uint8)
    # Cosine, not Euclidean: a long vector along x is still nearest to clean row 0.
    basis = np.array([[5.0, 0.1, 0.0], [0.1, 0.2, 0.9], [0.0, 0.9, 0.1]], dtype=np.float32)
    Y_B, source = label_basis_from_clean(basis, X_clean, Y_clean)
    np.testing.assert_array_equal(source, [0, 2, 1])
    np.testing.assert_array_equal(Y_B, Y_clean[[0, 2, 1]])
    assert Y_B.dtype == np.uint8


def test_basis_query_returns_nearest_pool_rows():
    pool = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    basis = np.array([[0.1, 1.0], [-2.0, 0.1], [1.0, 0.2]], dtype=np.float32)
    np.testing.assert_array_equal(basis_query(basis, pool, np.array([0, 1])), [1, 2])
    assert basis_query(basis, pool, np.array([], dtype=int)).shape == (0,)


def test_direct_rule_hand_case():
    Y_B = np.array([[1, 0], [1, 1], [1, 0], [0, 1]], dtype=np.uint8)
    C = np.array([[0.5, 0.3, 0.2, 0.0], [0.0, 0.2, 0.0, 0.8]], dtype=np.float32)
    labels, scores = direct_rule(C, Y_B)
    np.testing.assert_allclose(scores, [[1.0, 0.3], [0.2, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(labels, [[1, 0], [0, 1]])
    assert labels.dtype == np.uint8


def test_direct_rule_restores_planted_missing_label(data, recon):
    """Cluster 0 never has label 4 in the noisy labels; its basis neighbours (labelled from the
    clean set) all carry it, so the direct rule gives it back."""
    X, Y, Yn, k = data
    Y_B, _ = label_basis_from_clean(basis_vectors(recon), X[CLEAN], Y[CLEAN])
    rows = np.flatnonzero(k[TRAIN] == 0)
    assert (Yn[TRAIN][rows, 4] == 0).all() and (Y[TRAIN][rows, 4] == 1).all()
    C = coefficients(recon, X[TRAIN][rows])
    # The planted condition: every basis vector a cluster-0 row uses carries label 4.
    assert (Y_B[used_basis(C), 4] == 1).all()
    labels, scores = direct_rule(C, Y_B)
    assert (labels[:, 4] == 1).all()
    np.testing.assert_allclose(scores[:, 4], 1.0, atol=1e-5)


# --------------------------------------------------------------------------- joint training


def test_fit_selfml_corrects_labels(data, result):
    X, Y, Yn, _ = data
    fixed, probs = correct_labels(result, X[TRAIN], Yn[TRAIN])
    assert fixed.shape == Yn[TRAIN].shape and fixed.dtype == np.uint8
    assert ((probs >= 0) & (probs <= 1)).all()
    noisy_agree = (Yn[TRAIN] == Y[TRAIN]).mean()
    fixed_agree = (fixed == Y[TRAIN]).mean()
    assert fixed_agree > noisy_agree + 0.15, (noisy_agree, fixed_agree)


def test_joint_classifier_beats_noisy_baseline(data, result, baseline):
    X, Y, Yn, _ = data
    with torch.no_grad():
        p_base = torch.sigmoid(baseline(torch.from_numpy(X[TEST]))).numpy()
    p_self = predict_scores(result, X[TEST])
    acc_base = ((p_base >= 0.5) == Y[TEST]).mean()
    acc_self = ((p_self >= 0.5) == Y[TEST]).mean()
    assert acc_self > acc_base + 0.1, (acc_base, acc_self)


def test_history_has_every_phase(result):
    phases = {h["phase"] for h in result.history}
    assert phases == {"reconstruction", "flipping", "joint"}
    joint = [h for h in result.history if h["phase"] == "joint"]
    assert [h["step"] for h in joint] == [100, 200, 300]
    assert all({"total", "class", "bs", "ef"} <= h.keys() for h in joint)
    assert result.Y_B.shape == (32, 5) and result.basis_source.shape == (32,)


# --------------------------------------------------------------------------- sparsemax at scale


def _full_sort_sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 of Martins & Astudillo with a full sort: the reference."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cums = zs.cumsum(-1)
    k_z = ((1 + k * zs) > cums).sum(-1, keepdim=True)
    tau = (cums.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)
    return torch.clamp(z - tau, min=0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(2, 300), st.floats(0.01, 30), st.integers(0, 10_000))
def test_top_k_sparsemax_equals_the_full_sort(n: int, cols: int, scale: float, seed: int) -> None:
    """The top-k search is exact even when a support is wider than the first k (it doubles)."""
    from simlabel.labels.selfml import sparsemax_top

    z = torch.randn(n, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    torch.testing.assert_close(sparsemax(z), _full_sort_sparsemax(z))
    values, index = sparsemax_top(z, top=4)
    dense = torch.zeros_like(z).scatter(-1, index, values)
    torch.testing.assert_close(dense, _full_sort_sparsemax(z))


def test_sparse_coefficients_match_dense_sparsemax_and_its_gradient() -> None:
    """The reconstruction differentiates sparsemax on the support only: same values, same gradients."""
    from simlabel.labels.selfml import ExplainableReconstruction

    torch.manual_seed(0)
    X = torch.randn(40, 12, dtype=torch.float64)
    model = ExplainableReconstruction(X[:25], SelfMLConfig(n_basis=25)).double()
    with torch.no_grad():
        model.C_X.weight.add_(0.3 * torch.randn_like(model.C_X.weight))
    x = X[5:37]
    c, x_tilde = model(x)
    dense_c = _full_sort_sparsemax(model.C_X(x))
    torch.testing.assert_close(c, dense_c)
    torch.testing.assert_close(x_tilde, dense_c @ model.X_B)
    probe = torch.randn_like(x_tilde)
    grads = torch.autograd.grad((x_tilde * probe).sum() + (c * c).sum(), [model.C_X.weight, model.C_X.bias, model.X_B])
    ref = torch.autograd.grad(((dense_c @ model.X_B) * probe).sum() + (dense_c * dense_c).sum(),
                              [model.C_X.weight, model.C_X.bias, model.X_B])
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b)
