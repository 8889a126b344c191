r"""SELF-ML: self-explainable noisy label flipping for multi-label data (paper 004).

Frozen image embeddings :math:`x_i \in \mathbb{R}^d` (rows of a float32 matrix)
come in two sets: ``N``, whose multi-hot labels :math:`y_i \in \{0,1\}^L` were
never verified (typically positives are missing), and a small ``C`` for which
both the noisy and the verified labels are known. The paper's modules
(section 2, Fig. 2) on top of the frozen feature extractor:

**Explainable reconstruction** (:class:`ExplainableReconstruction`, "Selecting a
Basis of clean labeled images"). Two linear layers: :math:`C_X` regresses the
coefficients :math:`c_i \in \Delta^{n_B}` (a sparse convex combination), and the
basis :math:`X_B \in \mathbb{R}^{n_B \times d}` (the paper's
:math:`d \times n_B`, transposed here so a row is one basis image) gives
:math:`\tilde x_i = X_B^\top c_i` (``c @ X_B`` in code). The basis selection loss is

.. math:: \mathcal{L}_{BS} = \lambda_c \, \mathrm{Huber}_\delta(\tilde x_i - x_i)
          + \beta \, \mathrm{Reg}(X_B) \;[+\; \eta \, H(c_i)],
          \qquad \mathrm{Reg}(X_B) = \|X_B - X_{sample}\|_2

with the Huber loss summed over the ``d`` coordinates and averaged over the
rows, and :math:`X_{sample}` ``n_B`` training features drawn at random, which
also initialise :math:`X_B`. Reading of the paper: section 3 lists a
:math:`\lambda_c = 10` that section 2 never uses; we read it as the weight of
the reconstruction term inside :math:`\mathcal{L}_{BS}` (``lambda_c``), the
regulariser having its own weight ``basis_reg`` (:math:`\beta`). The Frobenius
norm is taken "per basis vector", :math:`\|X_B - X_{sample}\|_F / \sqrt{n_B}`
(the root-mean-square distance of a basis vector from its sample), so its size
does not grow with ``n_B``. Only trained on ``N`` (section 2: "it deals only
with visual information").

*Sparsity.* The paper asks for sparse convex :math:`c_i` (~40 of 1000 non-zero)
without saying how. Default ``sparsity="sparsemax"`` (Martins & Astudillo,
"From Softmax to Sparsemax", ICML 2016): the Euclidean projection of the
logits onto the simplex, :math:`\mathrm{sparsemax}(z) = \arg\min_{p \in \Delta}
\|p - z\|^2 = [z - \tau(z)]_+`, which gives exact zeros, so "which basis images
explain this row" is well defined. ``"softmax"`` is never exactly sparse;
an entropy penalty :math:`\eta \, H(c_i)` (``entropy_weight``) pushes it
towards few large weights.

**Labeling the basis** (section 2). Strategy 1: an oracle labels the basis
images in use (:func:`used_basis`, :func:`basis_query` picks the real catalog
image nearest each one); then, with no clean set, the *direct rule*
:func:`direct_rule` scores each label by :math:`Y_B c_i` and thresholds it.
Strategy 2 (:func:`label_basis_from_clean`): each basis vector takes the clean
labels of its nearest (cosine) image of ``C``.

**Label flipping** (:class:`FlippingModel`): an MLP on
:math:`[y_i, Y_B c_i, x_i]` giving corrected label probabilities
:math:`\hat f_i`, trained on ``C`` with the L1 loss
:math:`\mathcal{L}_{EF} = \|\hat f_i - y_i^{clean}\|_1`.

**Training** (section 2 "Model Training", section 3 "SELF-ML - jointly
trained"): the classifier comes pre-trained on ``N`` (binary focal loss,
:math:`\gamma = 2, \alpha = 0.6`: :class:`simlabel.heads.MultiLabelClassifier`, the
same head the baselines are); then pre-train the reconstruction on ``N``, label the
basis (strategy 2), pre-train the flipping model on ``C``; then minimise

.. math:: \mathcal{L}_{total} = \lambda_{Class} \mathcal{L}_{Class}
          + \lambda_{BS} \mathcal{L}_{BS} + \lambda_{EF} \mathcal{L}_{EF}

jointly over all three modules, on batches of 9/10 ``N`` and 1/10 ``C`` rows.
On ``N`` rows the classifier's target is the flipping model's output
:math:`\hat f_i` ("will serve as new corrected supervision", section 2),
detached (the flipper learns only from the clean labels, not from agreeing with
the classifier) and, by default, thresholded at ``threshold``
(``classifier_targets="hard"``: the focal loss's :math:`\alpha_t` and
:math:`(1-p_t)^\gamma` are defined for hard labels, and it replaces the noisy
labels by labels of the same kind; ``"soft"`` uses :math:`\hat f_i` itself).
On ``C`` rows the target is the clean labels. The basis labels :math:`Y_B` are
fixed after pre-training, as an oracle would have labelled them once.

Explanations (:func:`explain_flips`): for each changed label, the basis vectors
with the largest :math:`c_i` and their labels (section 2 "Explaining Label Flips").

Pure numpy/torch; deterministic for a given ``seed`` on CPU (the caller's global torch
RNG is left untouched). The file job behind ``simlabel flip`` and the explanations of the flips are
:mod:`simlabel.labels.flipping`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.losses import binary_focal_loss
from simlabel.optim import AdamW
from simlabel.progress import task

#: ``pretrain(X, Y) -> module``: a multi-label classifier (``(n, d) -> (n, L)`` logits) trained
#: on the noisy rows, e.g. ``lambda X, Y: MultiLabelClassifier(cfg).fit(X, Y).module_``.
Pretrain = Callable[[np.ndarray, np.ndarray], nn.Module]

__all__ = [
    "ExplainableReconstruction",
    "FlippingModel",
    "SelfMLConfig",
    "SelfMLResult",
    "basis_query",
    "basis_vectors",
    "coefficients",
    "correct_labels",
    "direct_rule",
    "fit_flipping",
    "fit_reconstruction",
    "fit_selfml",
    "label_basis_from_clean",
    "predict_scores",
    "sparsemax",
    "used_basis",
]

# C_X starts as scaled cosine similarity to the sampled basis images: sparsemax then starts from a
# few near neighbours (the paper's "basis images are mainly reconstructed by themselves"), whereas
# PyTorch's default init gives logits ~0 and a near-uniform, dense c_i that only averages the basis.
_INIT_LOGIT_SCALE = 10.0


@dataclass
class SelfMLConfig:
    r"""Hyper-parameters of SELF-ML (paper 004, sections 2 and 3); the method is in the module docstring.

    The basis selection loss is ``L_BS = lambda_c Huber_delta(x~_i - x_i) + beta Reg(X_B)
    [+ eta H(c_i)]`` with ``Reg(X_B) = ||X_B - X_sample||_F / sqrt(n_B)``, and the joint loss
    ``L_total = lambda_class L_Class + lambda_bs L_BS + lambda_ef L_EF``, ``L_EF`` the L1 loss
    of the flipping model on the clean rows and ``L_Class`` the classifier's binary focal loss.
    Training runs in phases: the reconstruction's pre-training on the noisy rows ``N``, the
    flipping model's on the clean rows ``C``, then ``joint_steps`` joint steps.

    Parameters
    ----------
    n_basis : int, default 1000
        Basis vectors ``n_B`` (clipped to the number of noisy rows).
    sparsity : {"sparsemax", "softmax"}, default "sparsemax"
        How the coefficients ``c_i`` are made convex: sparsemax (exact zeros, so "which basis
        images explain this row" is well defined) or softmax (never exactly sparse).
    entropy_weight : float, default 0.01
        ``eta``: the weight of the entropy penalty ``H(c_i)`` in ``L_BS`` (``softmax`` only),
        which pushes ``c_i`` towards few large weights.
    huber_delta : float, default 0.1
        ``delta`` of the Huber reconstruction loss (``> 0``), summed over the coordinates.
    basis_reg : float, default 1.0
        ``beta``: the weight of ``Reg(X_B)``, the basis's root-mean-square distance from the
        training features it was initialised with.
    lambda_class : float, default 1.0
        Weight of the classifier's loss ``L_Class`` in the joint loss.
    lambda_bs : float, default 1.0
        Weight of ``L_BS`` in the joint loss.
    lambda_ef : float, default 10.0
        Weight of the flipping model's L1 loss ``L_EF`` in the joint loss.
    lambda_c : float, default 10.0
        Weight of the reconstruction term inside ``L_BS`` (our reading of the paper's
        unexplained ``lambda_c = 10``).
    hidden : int, default 256
        Width of the flipping model's hidden layer.
    lr : float, default 1e-3
        Adam's learning rate of the flipping model's pre-training (and of the other phases when
        their own is ``None``); ``> 0``.
    batch_size : int, default 64
        Rows per batch of the flipping model's pre-training (and of the other phases when their
        own is ``None``); at least 2 (one clean and one noisy row).
    pretrain_batch_size : int or None, default 512
        Batches of the reconstruction's pre-training on ``N`` (``None``: ``batch_size``). Every
        step updates the whole basis and ``C_X``, so large batches with a larger rate train it
        6x faster to the same flips (``benchmarks/RESULTS.md`` section 10).
    pretrain_lr : float or None, default 5e-3
        Learning rate of the reconstruction's pre-training (``None``: ``lr``).
    joint_batch_size : int or None, default 256
        Rows per joint step (``None``: ``batch_size``): 500 steps of 256 rows see as many rows
        as 2,000 of 64, in a quarter of the dense updates.
    joint_lr : float or None, default 2e-3
        Learning rate of the joint phase (``None``: ``lr``).
    clean_share : float, default 0.1
        Share of clean rows in each joint batch, in ``(0, 1)``: ``round(clean_share * batch)``
        (at least one) clean rows, the rest noisy (the paper's 1/10).
    pretrain_epochs : int, default 15
        Epochs of the reconstruction's pre-training on ``N`` (and of the classifier's, where
        :func:`simlabel.training.multilabel_pretrain` pre-trains it).
    flip_pretrain_epochs : int, default 50
        Epochs of the flipping model's pre-training on ``C``.
    joint_steps : int, default 500
        Steps of the joint training.
    focal_gamma : float, default 2.0
        ``gamma`` of the classifier's binary focal loss.
    focal_alpha : float, default 0.6
        ``alpha`` of the classifier's binary focal loss.
    threshold : float, default 0.5
        A label is on where its probability is at or above it: the flipping model's corrected
        labels, the direct rule ``Y_B c_i >= threshold`` and the hard classifier targets; in
        ``[0, 1]``.
    seed : int, default 0
        Seed of the basis sample, the initialisations and the batches (the caller's global
        torch RNG is left untouched).
    device : str, default "cpu"
        The torch device the modules train on.
    classifier_targets : {"hard", "soft"}, default "hard"
        The classifier's targets on ``N`` rows in the joint phase: the flipping model's output
        ``f_i`` thresholded at ``threshold`` (``hard``) or ``f_i`` itself (``soft``).
    log_every : int, default 50
        Joint steps per history entry (each averages the steps since the previous one).

    Raises
    ------
    InputError
        A value out of its domain (a :class:`~simlabel.errors.ConfigError` naming the field).

    Examples
    --------
    >>> from simlabel import SelfMLConfig
    >>> cfg = SelfMLConfig(n_basis=200, joint_steps=100)
    >>> cfg.sparsity, cfg.n_basis, cfg.lambda_ef
    ('sparsemax', 200, 10.0)
    """

    n_basis: int = 1000
    sparsity: str = "sparsemax"
    entropy_weight: float = 0.01
    huber_delta: float = 0.1
    basis_reg: float = 1.0
    lambda_class: float = 1.0
    lambda_bs: float = 1.0
    lambda_ef: float = 10.0
    lambda_c: float = 10.0
    hidden: int = 256
    lr: float = 1e-3
    batch_size: int = 64
    #: the reconstruction's pre-training on N (None: batch_size and lr). Every step updates the
    #: whole 1000 x d basis and C_X, so large batches (fewer steps) with a larger rate train it
    #: 6x faster to the same flips (``benchmarks/RESULTS.md`` §10)
    pretrain_batch_size: int | None = 512
    pretrain_lr: float | None = 5e-3
    #: the joint phase's batches and learning rate (None: batch_size and lr): 500 steps of 256
    #: rows see as many rows as 2,000 of 64, in a quarter of the dense updates
    joint_batch_size: int | None = 256
    joint_lr: float | None = 2e-3
    clean_share: float = 0.1
    pretrain_epochs: int = 15
    flip_pretrain_epochs: int = 50
    joint_steps: int = 500
    focal_gamma: float = 2.0
    focal_alpha: float = 0.6
    threshold: float = 0.5
    seed: int = 0
    device: str = "cpu"
    classifier_targets: str = "hard"
    log_every: int = 50

    def __post_init__(self) -> None:
        one_of(self.sparsity, ("sparsemax", "softmax"), "sparsity")
        one_of(self.classifier_targets, ("hard", "soft"), "classifier_targets")
        positive_int(self.n_basis, "n_basis")
        in_range(self.clean_share, "clean_share", 0, 1, lo_open=True, hi_open=True)
        positive_int(self.batch_size, "batch_size (one clean and one noisy row)", minimum=2)
        positive_int(self.pretrain_batch_size, "pretrain_batch_size", allow_none=True)
        positive_int(self.joint_batch_size, "joint_batch_size", minimum=2, allow_none=True)
        if self.joint_lr is not None:
            in_range(self.joint_lr, "joint_lr", 0, lo_open=True)
        if self.pretrain_lr is not None:
            in_range(self.pretrain_lr, "pretrain_lr", 0, lo_open=True)
        in_range(self.huber_delta, "huber_delta", 0, lo_open=True)
        in_range(self.threshold, "threshold", 0, 1)
        in_range(self.lr, "lr", 0, lo_open=True)
        for name in ("pretrain_epochs", "flip_pretrain_epochs", "joint_steps"):
            positive_int(getattr(self, name), name, minimum=0)
        positive_int(self.hidden, "hidden")
        positive_int(self.log_every, "log_every")


# --------------------------------------------------------------------------- sparsemax


def _sparsemax_threshold(zs: Tensor) -> tuple[Tensor, Tensor]:
    """``(tau, k(z))`` from the largest entries ``zs`` sorted in descending order (last dim)."""
    k = torch.arange(1, zs.shape[-1] + 1, dtype=zs.dtype, device=zs.device)
    cums = zs.cumsum(dim=-1)
    support = (1 + k * zs) > cums
    # The support is a prefix of the sorted order, so its size is the count of True (always >= 1).
    k_z = support.sum(dim=-1, keepdim=True)
    return (cums.gather(-1, k_z - 1) - 1) / k_z.to(zs.dtype), k_z


#: rows of N on which the reconstruction's pre-training history is measured after each epoch
HISTORY_SAMPLE = 2048

#: sparsemax looks at the largest this-many entries first; a row whose support fills them is redone
#: with twice as many, so the result is exact whatever the support size
SPARSEMAX_TOP = 64


def sparsemax_top(z: Tensor, top: int = SPARSEMAX_TOP) -> tuple[Tensor, Tensor]:
    r"""Sparsemax of the rows of ``z`` (last dim) as ``(values, index)``: the non-zero
    coefficients and their columns, ``(n, m)`` each, ``m`` the largest support of the batch
    (padded with zeros).

    Exact: :math:`\tau(z)` only involves the support, a prefix of the sorted entries, so the
    ``top`` largest (``torch.topk``, 10x faster than sorting 1000 entries) decide it whenever the
    support is smaller; when a row's support fills them the search is redone with twice as many.
    """
    n_cols = z.shape[-1]
    m = min(top, n_cols)
    # Shifting by the max changes nothing (tau shifts alike) but keeps the cumsum well scaled.
    z = z - z.max(dim=-1, keepdim=True).values.detach()
    while True:
        zs, index = torch.topk(z, m, dim=-1, sorted=True) if m < n_cols else torch.sort(z, dim=-1, descending=True)
        tau, k_z = _sparsemax_threshold(zs)
        if m == n_cols or bool((k_z < m).all()):
            break
        m = min(2 * m, n_cols)
    width = int(k_z.max())
    return torch.clamp(zs[..., :width] - tau, min=0), index[..., :width]


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    r"""Sparsemax (Martins & Astudillo 2016, eq. 2): the projection of ``z`` onto the simplex.

    .. math:: \mathrm{sparsemax}(z)_j = [z_j - \tau(z)]_+, \quad
              \tau(z) = \frac{\sum_{j \le k(z)} z_{(j)} - 1}{k(z)}, \quad
              k(z) = \max\{k : 1 + k z_{(k)} > \textstyle\sum_{j \le k} z_{(j)}\}

    with :math:`z_{(1)} \ge z_{(2)} \ge \dots` sorted (their Algorithm 1); the sort is a top-k
    (:func:`sparsemax_top`). The output is non-negative, sums to 1 along ``dim`` and has exact
    zeros. Differentiable by autograd (top-k, cumsum, gather, scatter and the clamp all are); on
    the support the Jacobian is :math:`I - \mathbf{1}\mathbf{1}^\top / |S|`, the paper's eq. 14.
    """
    if not z.is_floating_point():
        raise InputError(f"z must be floating point, got {z.dtype}")
    z = z.movedim(dim, -1)
    values, index = sparsemax_top(z)
    return torch.zeros_like(z).scatter(-1, index, values).movedim(-1, dim)


# --------------------------------------------------------------------------- reconstruction


class ExplainableReconstruction(nn.Module):
    r"""The explainable reconstruction module (paper 004, section 2).

    ``forward(x) -> (c, x_tilde)``: :math:`c_i = \mathrm{sparsemax}(C_X x_i)` (or softmax), rows
    non-negative summing to 1, and :math:`\tilde x_i = X_B^\top c_i` (``c @ X_B``).
    ``loss(x)`` is :math:`\mathcal{L}_{BS}` of the module docstring. ``X_sample`` is kept as a
    buffer (the regulariser's anchor); ``history`` gets one dict per pre-training epoch.
    """

    def __init__(self, X_sample: Tensor, config: SelfMLConfig) -> None:
        super().__init__()
        if X_sample.ndim != 2 or X_sample.shape[0] < 1:
            raise InputError(f"X_sample must be (n_B, d) with n_B >= 1, got {tuple(X_sample.shape)}")
        n_b, d = X_sample.shape
        self.config = config
        self.register_buffer("X_sample", X_sample.detach().clone())
        self.X_B = nn.Parameter(X_sample.detach().clone())
        self.C_X = nn.Linear(d, n_b)
        with torch.no_grad():
            norms = X_sample.norm(dim=1, keepdim=True).clamp_min(1e-12)
            # Scale by the typical feature norm so the initial logits are ~ cosine * scale whatever the
            # embedding's units.
            self.C_X.weight.copy_(X_sample / norms * (_INIT_LOGIT_SCALE / float(norms.mean())))
            self.C_X.bias.zero_()
        self.history: list[dict] = []

    @property
    def n_basis(self) -> int:
        return int(self.X_B.shape[0])

    def coefficients(self, x: Tensor) -> Tensor:
        """The convex coefficients ``c`` ``(n, n_B)``."""
        if self.config.sparsity == "sparsemax":
            rows, cols, values = self.sparse_coefficients(x)
            return torch.zeros(x.shape[0], self.n_basis, dtype=values.dtype, device=values.device).index_put((rows, cols), values)
        return F.softmax(self.C_X(x), dim=-1)

    def sparse_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The non-zero sparsemax coefficients as ``(rows, cols, values)``.

        Exact sparsemax, computed where it is non-zero: the support :math:`S_i` of each row is found
        without gradient (:func:`sparsemax_top` on :math:`C_X x_i`), then, with gradient, the
        support's logits :math:`z_{ij} = w_j \cdot x_i + b_j` and
        :math:`c_{ij} = z_{ij} - (\sum_{k \in S_i} z_{ik} - 1) / |S_i|` (eq. 2 of Martins & Astudillo
        on the support, whose Jacobian is their eq. 14). Back-propagation then costs ``nnz * d``
        (a row has ~5 non-zeros of n_B = 1000) instead of ``n * n_B * d``.
        """
        n = x.shape[0]
        with torch.no_grad():
            values, index = sparsemax_top(self.C_X(x))
            keep = values > 0
            rows = torch.arange(n, device=x.device).unsqueeze(1).expand_as(index)[keep]
            cols = index[keep]
        z = (x.index_select(0, rows) * F.embedding(cols, self.C_X.weight)).sum(dim=-1) + self.C_X.bias[cols]
        count = torch.bincount(rows, minlength=n).to(z.dtype)
        tau = (torch.zeros(n, dtype=z.dtype, device=z.device).index_add(0, rows, z) - 1) / count.clamp_min(1)
        return rows, cols, (z - tau[rows]).clamp_min(0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.config.sparsity != "sparsemax":
            c = self.coefficients(x)
            return c, c @ self.X_B
        # x~_i = sum over the support of c_ij X_B[j]: nnz * d multiply-adds, not n * n_B * d
        # (F.embedding is the gather whose backward is a dense scatter-add, 5x faster than X_B[cols]'s)
        rows, cols, values = self.sparse_coefficients(x)
        x_tilde = torch.zeros_like(x).index_add(0, rows, values.unsqueeze(1) * F.embedding(cols, self.X_B))
        c = torch.zeros(x.shape[0], self.n_basis, dtype=values.dtype, device=values.device).index_put((rows, cols), values)
        return c, x_tilde

    def reconstruction_error(self, x: Tensor, x_tilde: Tensor) -> Tensor:
        r"""Per-row Huber error :math:`\sum_k \mathrm{Huber}_\delta(\tilde x_{ik} - x_{ik})`, ``(n,)``."""
        return F.huber_loss(x_tilde, x, delta=self.config.huber_delta, reduction="none").sum(dim=-1)

    def basis_regularizer(self) -> Tensor:
        r""":math:`\|X_B - X_{sample}\|_F / \sqrt{n_B}` (root-mean-square distance per basis vector)."""
        # vector_norm's gradient is 0 at 0, where X_B starts (a hand-made sqrt of a sum of squares
        # would be 0 * inf there), and it makes one pass over the basis fewer
        return torch.linalg.vector_norm(self.X_B - self.X_sample) / self.n_basis**0.5

    def loss(self, x: Tensor, out: tuple[Tensor, Tensor] | None = None) -> Tensor:
        r""":math:`\mathcal{L}_{BS}` on the rows ``x`` (``out``: a forward already computed)."""
        c, x_tilde = self(x) if out is None else out
        cfg = self.config
        total = cfg.lambda_c * self.reconstruction_error(x, x_tilde).mean() + cfg.basis_reg * self.basis_regularizer()
        if cfg.sparsity == "softmax" and cfg.entropy_weight:
            # Softmax is never exactly sparse; low entropy means few basis vectors carry the weight.
            entropy = -torch.xlogy(c, c).sum(dim=-1).mean()
            total = total + cfg.entropy_weight * entropy
        return total


# --------------------------------------------------------------------------- helpers


def _device(config: SelfMLConfig) -> torch.device:
    return torch.device(config.device)


def _as_features(X: np.ndarray, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n, d), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError(f"{name} has non-finite values")
    return X


def _as_labels(Y: np.ndarray, n: int, name: str = "Y") -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"{name} must be 2-D (n={n}, L), got shape {Y.shape}")
    if Y.size and not np.isin(Y, (0, 1)).all():
        raise InputError(f"{name} must hold 0/1 labels")
    return Y.astype(np.float32)


def _tensor(a: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)


class _Batches:
    """Endless mini-batches of row indices: successive seeded permutations (every row once per pass)."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng = n, rng
        self.perm = rng.permutation(n)
        self.pos = 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos == self.n:
                self.perm, self.pos = self.rng.permutation(self.n), 0
            step = min(k, self.n - self.pos)
            out.append(self.perm[self.pos : self.pos + step])
            self.pos += step
            k -= step
        return np.concatenate(out)


def _epoch_batches(n: int, batch_size: int, rng: np.random.Generator):
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _nearest_cosine(queries: np.ndarray, pool: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Index of the most cosine-similar ``pool`` row for each query (ties: the lowest index)."""
    q, p = _unit_rows(queries), _unit_rows(pool)
    if len(p) == 0:
        raise InputError("the pool of candidate rows is empty")
    out = np.empty(len(q), dtype=np.int64)
    # Chunks bound the similarity matrix's memory at chunk x len(pool).
    for s in range(0, len(q), chunk):
        out[s : s + chunk] = (q[s : s + chunk] @ p.T).argmax(axis=1)
    return out


# --------------------------------------------------------------------------- reconstruction API


def fit_reconstruction(X_noisy: np.ndarray, config: SelfMLConfig | None = None) -> ExplainableReconstruction:
    """Pre-train the explainable reconstruction on the noisy set ``N`` (paper 004, section 2).

    ``X_sample`` is ``min(n_basis, n)`` rows of ``X_noisy`` drawn without replacement (seeded). Adam
    on ``L_BS`` for ``pretrain_epochs`` epochs. ``model.history`` gets, for epoch 0 (before training)
    and each epoch after, the mean per-row Huber error (``recon_huber``), the mean squared error
    (``recon_mse``) on a fixed sample of :data:`HISTORY_SAMPLE` rows of ``X_noisy`` (all of them
    when fewer), the mean training loss (``loss``) and the number of basis vectors the sample uses
    (``used``).
    """
    cfg = config or SelfMLConfig()
    X = _as_features(X_noisy, "X_noisy")
    if len(X) == 0:
        raise InputError("X_noisy is empty")
    dev = _device(cfg)
    rng = np.random.default_rng(cfg.seed)
    n_b = min(cfg.n_basis, len(X))
    sample = np.sort(rng.choice(len(X), size=n_b, replace=False))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ExplainableReconstruction(_tensor(X[sample], dev), cfg).to(dev)
        Xt = _tensor(X, dev)
        opt = AdamW(model.parameters(), lr=cfg.pretrain_lr or cfg.lr, weight_decay=0.0, decoupled=False)

        # the history is measured on a fixed sample: a full pass per epoch would cost as much as the epoch
        probe = Xt[np.sort(np.random.default_rng(cfg.seed + 7).choice(len(X), size=min(len(X), HISTORY_SAMPLE), replace=False))]

        def record(epoch: int, loss: float) -> None:
            huber = mse = 0.0
            used = torch.zeros(model.n_basis, dtype=torch.bool, device=dev)
            with torch.no_grad():
                for s in range(0, len(probe), 512):
                    xb = probe[s : s + 512]
                    c, xt = model(xb)
                    huber += float(model.reconstruction_error(xb, xt).sum())
                    mse += float((xt - xb).pow(2).sum())
                    used |= (c > 0).any(dim=0)
            model.history.append({"epoch": epoch, "loss": loss, "recon_huber": huber / len(probe),
                                  "recon_mse": mse / len(probe), "used": int(used.sum())})

        record(0, float("nan"))
        with task("reconstruction", cfg.pretrain_epochs, unit="epochs") as bar:
            for epoch in range(1, cfg.pretrain_epochs + 1):
                total, seen = torch.zeros(()), 0
                for idx in _epoch_batches(len(X), cfg.pretrain_batch_size or cfg.batch_size, rng):
                    loss = model.loss(Xt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(idx)
                    seen += len(idx)
                record(epoch, float(total) / seen)
                bar.advance(1, loss=f"{model.history[-1]['loss']:.4f}", used=model.history[-1]["used"])
    return model.eval()


def coefficients(model: ExplainableReconstruction, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The coefficients :math:`c_i` ``(n, n_B)`` float32: rows >= 0 summing to 1."""
    X = _as_features(X)
    dev = next(model.parameters()).device
    out = np.empty((len(X), model.n_basis), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            out[s : s + batch_size] = model.coefficients(_tensor(X[s : s + batch_size], dev)).cpu().numpy()
    return out


def basis_vectors(model: ExplainableReconstruction) -> np.ndarray:
    """The learned basis :math:`X_B` ``(n_B, d)`` float32 (one row per basis image)."""
    return model.X_B.detach().cpu().numpy().astype(np.float32, copy=True)


def used_basis(C: np.ndarray, min_weight: float = 1e-6) -> np.ndarray:
    """Indices of the basis vectors with a coefficient above ``min_weight`` in some row of ``C``.

    The paper (section 3) finds ~40 of 1000 in use: those are the images an oracle must label
    (strategy 1). With softmax coefficients nothing is exactly 0, so ``min_weight`` matters there.
    """
    C = np.asarray(C)
    if C.ndim != 2:
        raise InputError(f"C must be 2-D (n, n_B), got shape {C.shape}")
    return np.flatnonzero((C > min_weight).any(axis=0)).astype(np.int64)


# --------------------------------------------------------------------------- labeling the basis


def label_basis_from_clean(
    basis: np.ndarray, X_clean: np.ndarray, Y_clean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Strategy 2 (paper 004, section 2 "Labeling the Basis"): each basis vector takes the verified
    labels of its nearest clean image (cosine similarity; ties go to the lowest row).

    Returns ``(Y_B, source)``: ``Y_B`` ``(n_B, L)`` uint8 and ``source`` ``(n_B,)`` the clean row
    index each basis vector copied its labels from.
    """
    basis = _as_features(basis, "basis")
    X_clean = _as_features(X_clean, "X_clean")
    Y = _as_labels(Y_clean, len(X_clean), "Y_clean")
    if basis.shape[1] != X_clean.shape[1]:
        raise InputError(f"basis has d={basis.shape[1]} but X_clean has d={X_clean.shape[1]}")
    source = _nearest_cosine(basis, X_clean)
    return Y[source].astype(np.uint8), source


def basis_query(basis: np.ndarray, X_pool: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Strategy 1 helper: for each basis vector in ``used``, the row of ``X_pool`` nearest to it (cosine).

    The learned basis vectors are not images; their nearest catalog images are what an oracle
    labels. Returns ``(len(used),)`` row indices into ``X_pool``, in the order of ``used`` (two basis
    vectors may share an image; the caller deduplicates before exporting).
    """
    basis = _as_features(basis, "basis")
    X_pool = _as_features(X_pool, "X_pool")
    used = np.asarray(used, dtype=np.int64).reshape(-1)
    if used.size and (used.min() < 0 or used.max() >= len(basis)):
        raise InputError(f"used indices must lie in [0, {len(basis)})")
    if used.size == 0:
        return np.empty(0, dtype=np.int64)
    return _nearest_cosine(basis[used], X_pool)


def direct_rule(C: np.ndarray, Y_B: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    r"""The direct flipping rule without a clean set (paper 004, section 2, strategy 1).

    :math:`S = C Y_B` (row i is the paper's :math:`Y_B c_i`: per label, the share of the
    reconstruction weight carried by basis images having it); ``labels = S >= threshold``.
    Returns ``(labels (n, L) uint8, scores (n, L) float32)``.
    """
    C = np.asarray(C, dtype=np.float32)
    Y_B = np.asarray(Y_B, dtype=np.float32)
    if C.ndim != 2 or Y_B.ndim != 2 or C.shape[1] != Y_B.shape[0]:
        raise InputError(f"C (n, n_B) and Y_B (n_B, L) do not match: {C.shape} and {Y_B.shape}")
    S = C @ Y_B
    return (S >= threshold).astype(np.uint8), S


# --------------------------------------------------------------------------- flipping


class FlippingModel(nn.Module):
    r"""The label flipping module (paper 004, section 2): :math:`[y_i, Y_B c_i, x_i]` -> MLP -> sigmoid.

    ``forward(y_noisy, basis_scores, x)`` returns the corrected label probabilities
    :math:`\hat f_i` ``(n, L)``. One hidden ReLU layer of width ``hidden`` builds the paper's
    "shared space" of the three inputs.
    """

    def __init__(self, n_labels: int, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.n_labels, self.dim = int(n_labels), int(dim)
        self.net = nn.Sequential(nn.Linear(2 * n_labels + dim, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))
        self.history: list[dict] = []

    def forward(self, y_noisy: Tensor, basis_scores: Tensor, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(torch.cat([y_noisy, basis_scores, x], dim=-1)))


def _l1(f: Tensor, y: Tensor) -> Tensor:
    r""":math:`\mathcal{L}_{EF}`: the absolute distance :math:`\|\hat f_i - y_i\|_1`, averaged over rows."""
    return (f - y).abs().sum(dim=-1).mean()


def fit_flipping(
    X_clean: np.ndarray,
    Y_clean_noisy: np.ndarray,
    Y_clean_true: np.ndarray,
    C_clean: np.ndarray,
    Y_B: np.ndarray,
    config: SelfMLConfig | None = None,
) -> FlippingModel:
    """Pre-train the flipping model on the clean set ``C`` with the L1 loss (paper 004, section 2).

    Inputs per row: the noisy labels, :math:`Y_B c_i` (``C_clean @ Y_B``) and the features.
    ``flip_pretrain_epochs`` epochs of Adam; ``model.history`` gets the mean loss per epoch.
    """
    cfg = config or SelfMLConfig()
    X = _as_features(X_clean, "X_clean")
    n = len(X)
    if n == 0:
        raise InputError("the clean set is empty")
    Yn = _as_labels(Y_clean_noisy, n, "Y_clean_noisy")
    Yt = _as_labels(Y_clean_true, n, "Y_clean_true")
    S = direct_rule(C_clean, Y_B)[1]
    if S.shape != Yn.shape or Yt.shape != Yn.shape:
        raise InputError(f"label shapes differ: noisy {Yn.shape}, true {Yt.shape}, Y_B c {S.shape}")
    dev = _device(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        model = FlippingModel(Yn.shape[1], X.shape[1], cfg.hidden).to(dev)
        tX, tYn, tYt, tS = (_tensor(a, dev) for a in (X, Yn, Yt, S))
        opt = AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, decoupled=False)
        with task("flipping model", cfg.flip_pretrain_epochs, unit="epochs") as bar:
            for epoch in range(1, cfg.flip_pretrain_epochs + 1):
                total = torch.zeros(())
                for idx in _epoch_batches(n, cfg.batch_size, rng):
                    loss = _l1(model(tYn[idx], tS[idx], tX[idx]), tYt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(idx)
                model.history.append({"epoch": epoch, "loss": float(total) / n})
                bar.advance(1, loss=f"{model.history[-1]['loss']:.4f}")
    return model.eval()


# --------------------------------------------------------------------------- classifier and joint training


def _class_loss(logits: Tensor, targets: Tensor, cfg: SelfMLConfig) -> Tensor:
    return binary_focal_loss(logits, targets, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)


@dataclass
class SelfMLResult:
    """What :func:`fit_selfml` trained.

    ``classifier``: ``d -> L`` multi-label logits (a copy of the pre-trained one, trained
    jointly); ``reconstruction``, ``flipper``: the modules;
    ``Y_B`` ``(n_B, L)`` uint8 basis labels; ``basis_source``: the clean row each basis vector took
    its labels from; ``history``: one dict per logging step, with a ``phase`` key
    (``reconstruction``/``flipping`` per pre-training epoch, ``joint`` every
    ``log_every`` steps with ``total``, ``class``, ``bs``, ``ef``).
    """

    classifier: nn.Module
    reconstruction: ExplainableReconstruction
    flipper: FlippingModel
    Y_B: np.ndarray
    basis_source: np.ndarray
    config: SelfMLConfig = field(default_factory=SelfMLConfig)
    history: list[dict] = field(default_factory=list)


def fit_selfml(
    X_noisy: np.ndarray,
    Y_noisy: np.ndarray,
    X_clean: np.ndarray,
    Y_clean_noisy: np.ndarray,
    Y_clean_true: np.ndarray,
    config: SelfMLConfig | None = None,
    *,
    classifier: nn.Module,
) -> SelfMLResult:
    r"""SELF-ML jointly trained (paper 004, section 3; loss of section 2 "Model Training").

    1. ``classifier``: a multi-label classifier pre-trained on ``N`` (noisy labels, binary focal
       loss; :class:`simlabel.heads.MultiLabelClassifier`); a copy is trained, the caller's
       module is left as it was;
    2. reconstruction on ``N`` (:func:`fit_reconstruction`);
    3. basis labels from ``C`` (strategy 2, :func:`label_basis_from_clean`), then fixed;
    4. flipping model on ``C`` (:func:`fit_flipping`);
    5. ``joint_steps`` Adam steps over all three modules on batches of ``joint_batch_size`` rows
       (``batch_size`` when None), ``round(clean_share * batch)`` (>= 1) of them clean and the rest
       noisy, minimising
       :math:`\lambda_{Class}\mathcal{L}_{Class} + \lambda_{BS}\mathcal{L}_{BS} + \lambda_{EF}\mathcal{L}_{EF}`:
       :math:`\mathcal{L}_{Class}` the focal loss over the whole batch, the targets being
       :math:`\hat f_i` (detached; thresholded unless ``classifier_targets="soft"``) on ``N`` rows and
       the clean labels on ``C`` rows; :math:`\mathcal{L}_{BS}` on the ``N`` rows;
       :math:`\mathcal{L}_{EF}` the L1 loss on the ``C`` rows, whose gradient also reaches
       :math:`C_X` through :math:`Y_B c_i`.
    """
    cfg = config or SelfMLConfig()
    Xn = _as_features(X_noisy, "X_noisy")
    Xc = _as_features(X_clean, "X_clean")
    Yn = _as_labels(Y_noisy, len(Xn), "Y_noisy")
    Ycn = _as_labels(Y_clean_noisy, len(Xc), "Y_clean_noisy")
    Yct = _as_labels(Y_clean_true, len(Xc), "Y_clean_true")
    if Xn.shape[1] != Xc.shape[1] or Yn.shape[1] != Ycn.shape[1] or Ycn.shape != Yct.shape:
        raise InputError("noisy and clean sets disagree on the feature or label dimension")
    if len(Xn) == 0 or len(Xc) == 0:
        raise InputError("SELF-ML needs a non-empty noisy set and a non-empty clean set")
    dev = _device(cfg)
    history: list[dict] = []

    clf = copy.deepcopy(classifier).to(dev)
    recon = fit_reconstruction(Xn, cfg)
    history += [{"phase": "reconstruction", **h} for h in recon.history]
    Y_B, source = label_basis_from_clean(basis_vectors(recon), Xc, Yct)
    flipper = fit_flipping(Xc, Ycn, Yct, coefficients(recon, Xc), Y_B, cfg)
    history += [{"phase": "flipping", **h} for h in flipper.history]

    joint_batch = cfg.joint_batch_size or cfg.batch_size
    n_clean = max(1, int(round(cfg.clean_share * joint_batch)))
    n_noisy = joint_batch - n_clean
    rng = np.random.default_rng(cfg.seed + 3)
    noisy_batches, clean_batches = _Batches(len(Xn), rng), _Batches(len(Xc), rng)
    tXn, tYn, tXc, tYcn, tYct = (_tensor(a, dev) for a in (Xn, Yn, Xc, Ycn, Yct))
    tYB = _tensor(Y_B, dev)
    modules = nn.ModuleList([clf, recon, flipper]).train()
    # A fresh optimiser: the pre-training moments belong to other objectives.
    opt = AdamW(modules.parameters(), lr=cfg.joint_lr or cfg.lr, weight_decay=0.0, decoupled=False)
    sums = {"total": 0.0, "class": 0.0, "bs": 0.0, "ef": 0.0}
    count = 0
    with task("joint training", cfg.joint_steps, unit="steps") as bar:
        for step in range(1, cfg.joint_steps + 1):
            i_n, i_c = noisy_batches.take(n_noisy), clean_batches.take(n_clean)
            xn, xc = tXn[i_n], tXc[i_c]
            # one reconstruction pass over the batch: the noisy rows' output and the clean rows' c
            c_all, xt_all = recon(torch.cat([xn, xc]))
            out_n, c_c = (c_all[: len(i_n)], xt_all[: len(i_n)]), c_all[len(i_n) :]
            l_bs = recon.loss(xn, out_n)
            f_n = flipper(tYn[i_n], out_n[0] @ tYB, xn)
            f_c = flipper(tYcn[i_c], c_c @ tYB, xc)
            l_ef = _l1(f_c, tYct[i_c])
            # The corrected labels supervise the classifier but must not be pulled towards its guesses.
            target_n = f_n.detach()
            if cfg.classifier_targets == "hard":
                target_n = (target_n >= cfg.threshold).to(target_n.dtype)
            logits = clf(torch.cat([xn, xc]))
            l_class = _class_loss(logits, torch.cat([target_n, tYct[i_c]]), cfg)
            total = cfg.lambda_class * l_class + cfg.lambda_bs * l_bs + cfg.lambda_ef * l_ef
            opt.zero_grad()
            total.backward()
            opt.step()
            for k, v in (("total", total), ("class", l_class), ("bs", l_bs), ("ef", l_ef)):
                sums[k] += v.detach()
            count += 1
            if step % cfg.log_every == 0 or step == cfg.joint_steps:
                # Each entry averages the steps since the previous one: less noisy than one batch.
                history.append({"phase": "joint", "step": step, **{k: float(v) / count for k, v in sums.items()}})
                sums, count = dict.fromkeys(sums, 0.0), 0
                bar.advance(step - bar.completed, loss=f"{history[-1]['total']:.4f}")
    modules.eval()
    return SelfMLResult(clf, recon, flipper, Y_B, source, cfg, history)


def predict_scores(result: SelfMLResult, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The classifier's label probabilities ``sigmoid(logits)`` ``(n, L)`` float32."""
    X = _as_features(X)
    dev = next(result.classifier.parameters()).device
    parts = []
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            parts.append(torch.sigmoid(result.classifier(_tensor(X[s : s + batch_size], dev))).cpu().numpy())
    L = result.Y_B.shape[1]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, L), np.float32)


def correct_labels(
    result: SelfMLResult, X: np.ndarray, Y_noisy: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    r"""The flipping model's corrected labels: ``(labels (n, L) uint8, probabilities`` :math:`\hat f_i` ``)``.

    Labels are :math:`\hat f_i \ge` ``threshold`` (the config's).
    """
    X = _as_features(X)
    Y = _as_labels(Y_noisy, len(X), "Y_noisy")
    S = direct_rule(coefficients(result.reconstruction, X, batch_size), result.Y_B)[1]
    dev = next(result.flipper.parameters()).device
    probs = np.empty(Y.shape, dtype=np.float32)
    with torch.no_grad():
        for s in range(0, len(X), batch_size):
            sl = slice(s, s + batch_size)
            probs[sl] = result.flipper(_tensor(Y[sl], dev), _tensor(S[sl], dev), _tensor(X[sl], dev)).cpu().numpy()
    return (probs >= result.config.threshold).astype(np.uint8), probs
