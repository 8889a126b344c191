"""A colour-invariant projection fitted in closed form on the frozen pretrained encoder: learned whitening.

The ``whitening`` recipe (:mod:`simlabel.ssl.recipes`) keeps the pretrained trunk whole and learns one linear map on
its pooled features from *matching pairs*: SkiLL's views of one image (the un-jittered view against views through
the colour-agnostic set, paper 001 §3.2) and, where the catalog names products (``product_col``), the images of one
product (paper 001 eq. 1's positives). It is Radenović, Tolias & Chum's learned whitening ("Fine-tuning CNN Image
Retrieval with No Human Annotation", TPAMI 2018, §3.4, after Mikolajczyk & Matas 2007), with SkiLL's views as the
matching pairs, which is what self-supervised whitening does (W-MSE, Ermolov et al. 2021), in closed form.

With ``f`` a pooled feature after a signed power normalisation ``sign(x) |x|^p`` (Perronnin et al. 2010; ``p = 0.5``)::

    mu    = E[f]                          Sigma_D = Cov(f)                       (every image)
    d     = (f(clean) - f(view)) / 2      Sigma_V = E[d d^T]                     (SkiLL's view pairs)
    e     = f_i - mean_{j in g} f_j       (rows i of a product group g with 2+ images)
    Sigma_S = (sum d d^T + sum e e^T) / (#d + #e)                                (everything that should not matter)
    N     = I - U_r U_r^T                 U_r: the top r eigenvectors of Sigma_V (the colour subspace, removed)
    S     = (1 - s) N Sigma_S N + s tr(N Sigma_S N) / D  I                       (shrinkage s)
    P     = S^(-1/2)                                                             (whitening of what should not matter)
    P N Sigma_D N P = R Lambda R^T        (Lambda descending)                   (rotation to what does)
    W     = N P R[:, :dims]
    y     = normalise((f - mu) W)

Directions along which an image's views (or a product's colour variants) differ are shrunk to unit variance and
the ``r`` strongest of them removed outright, so a linear probe no longer reads the colour there; what varies
between images is kept. Measured on fashion-products (RESULTS.md §11c): same-design-other-colour recall@10 on
held-out designs 29.9% -> 38.3% with the training half's designs as products (37.5% with no product column),
article_type accuracy kept, the colour probe 56.6% -> 42.5%.

The statistics are sums, streamed a block at a time (:class:`WhiteningStats`): rows arrive in product order, so a
group's mean is complete when its last row has been seen and no catalog-sized array is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from simlabel.checks import in_range, positive_int
from simlabel.errors import InputError

__all__ = ["WhiteningProjector", "WhiteningStats", "learned_whitening", "signed_power"]


def signed_power(x: np.ndarray, p: float) -> np.ndarray:
    """``sign(x) |x|^p`` elementwise (``p = 1``: ``x``).

    Examples
    --------
    >>> signed_power(np.array([-4.0, 0.0, 9.0]), 0.5)
    array([-2.,  0.,  3.])
    """
    return np.sign(x) * np.abs(x) ** p


def learned_whitening(mean: np.ndarray, cov_data: np.ndarray, cov_same: np.ndarray, cov_views: np.ndarray, *,
                      shrinkage: float = 0.1, nuisance_dims: int = 96, dims: int | None = None) -> np.ndarray:
    """The map ``W`` of the module docstring: ``y = (f - mean) W``, from the three covariances.

    Parameters
    ----------
    mean : ndarray of shape (D,)
        Not used by the solve; checked for shape (it is the map's offset).
    cov_data : ndarray of shape (D, D)
        ``Sigma_D``, the features' covariance.
    cov_same : ndarray of shape (D, D)
        ``Sigma_S``, the scatter of every matching pair (views and products).
    cov_views : ndarray of shape (D, D)
        ``Sigma_V``, the scatter of the view pairs alone: its top ``nuisance_dims`` directions are removed.
    shrinkage : float in [0, 1]
        ``s``: how far ``Sigma_S`` is pulled to a multiple of the identity (it is rank-deficient when pairs are few).
    nuisance_dims : int
        ``r``; 0 removes nothing.
    dims : int, optional
        Output dimension (default ``D``).

    Returns
    -------
    ndarray of shape (D, dims)

    Examples
    --------
    Two features: the first is what the views change (colour), the second what the images differ by. With the
    colour direction removed, the map keeps only the second, scaled to unit variance of what should not matter:

    >>> cov_views = np.array([[4.0, 0.0], [0.0, 0.01]])
    >>> cov_data = np.array([[4.0, 0.0], [0.0, 1.0]])
    >>> W = learned_whitening(np.zeros(2), cov_data, cov_views, cov_views, shrinkage=0.0, nuisance_dims=1)
    >>> np.round(np.abs(W), 6)
    array([[ 0.],
           [10.]])
    """
    d = cov_data.shape[0]
    for name, c in (("cov_data", cov_data), ("cov_same", cov_same), ("cov_views", cov_views)):
        if c.shape != (d, d):
            raise InputError(f"{name} must be ({d}, {d}); got {c.shape}")
    if mean.shape != (d,):
        raise InputError(f"mean must be ({d},); got {mean.shape}")
    in_range(shrinkage, "shrinkage", 0, 1)
    positive_int(nuisance_dims, "nuisance_dims", minimum=0)
    if nuisance_dims >= d:
        raise InputError(f"nuisance_dims ({nuisance_dims}) must be below the feature dimension ({d})")
    keep = d - nuisance_dims
    positive_int(dims, "dims", allow_none=True)
    dims = keep if dims is None else dims
    if dims > keep:
        raise InputError(f"dims ({dims}) must be at most the dimension left after removing nuisance_dims ({keep})")
    _, vecs = np.linalg.eigh(cov_views)
    # an orthonormal basis of the kept subspace: the eigenvectors of Sigma_V below its top r
    basis = vecs[:, :keep]  # (D, keep); N = basis basis^T
    same = basis.T @ cov_same @ basis
    same = (1 - shrinkage) * same + shrinkage * np.trace(same) / d * np.eye(keep)
    w, v = np.linalg.eigh(same)
    if w.min() <= 0:
        raise InputError("the matching pairs' scatter is singular in the kept subspace: raise `shrinkage` above 0")
    inv_sqrt = (v / np.sqrt(w)) @ v.T
    data = inv_sqrt @ (basis.T @ cov_data @ basis) @ inv_sqrt
    _, rot = np.linalg.eigh(data)
    rot = rot[:, ::-1][:, :dims]
    return basis @ inv_sqrt @ rot


@dataclass
class WhiteningStats:
    """Running sums for :func:`learned_whitening`, a block of rows at a time.

    Rows must arrive grouped: every row of a product group consecutively (in any order of groups). A group still
    open at a block's end is carried into the next (``carry_*``), so the blocks may cut anywhere.
    """

    dim: int
    n: int = 0
    total: np.ndarray = field(default=None)  # sum f
    outer: np.ndarray = field(default=None)  # sum f f^T
    n_views: int = 0
    views: np.ndarray = field(default=None)  # sum d d^T over view pairs
    n_grouped: int = 0
    grouped: np.ndarray = field(default=None)  # sum e e^T over grouped rows
    carry_code: int = -1
    carry_rows: np.ndarray = field(default=None)  # the open group's rows (its features)

    def __post_init__(self) -> None:
        d = self.dim
        for name, shape in (("total", (d,)), ("outer", (d, d)), ("views", (d, d)), ("grouped", (d, d))):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(shape))
        if self.carry_rows is None:
            self.carry_rows = np.zeros((0, d))

    def add(self, features: np.ndarray, views: np.ndarray | None = None, codes: np.ndarray | None = None) -> None:
        """One block.

        Parameters
        ----------
        features : ndarray of shape (m, D)
            The rows' (power-normalised) features of their un-jittered view.
        views : ndarray of shape (m, v, D), optional
            Each row's ``v`` augmented views' features: the pairs ``(features[i], views[i, k])``.
        codes : ndarray of shape (m,), optional
            Each row's product group (int, ``-1``: none), rows of a group consecutive across blocks.
        """
        f = np.asarray(features, dtype=np.float64)
        self.n += len(f)
        self.total += f.sum(0)
        self.outer += f.T @ f
        if views is not None and views.size:
            dd = ((f[:, None, :] - views) / 2).reshape(-1, self.dim)
            self.n_views += len(dd)
            self.views += dd.T @ dd
        if codes is not None:
            self._add_groups(f, np.asarray(codes))

    def _add_groups(self, f: np.ndarray, codes: np.ndarray) -> None:
        rows = np.concatenate([self.carry_rows, f]) if len(self.carry_rows) else f
        all_codes = np.concatenate([np.full(len(self.carry_rows), self.carry_code), codes])
        cuts = np.flatnonzero(np.diff(all_codes)) + 1
        starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(all_codes)]])
        # the last run may continue in the next block: carry it
        self.carry_code, self.carry_rows = int(all_codes[starts[-1]]), rows[starts[-1]:]
        for s, e in zip(starts[:-1], ends[:-1]):
            self._close(all_codes[s], rows[s:e])

    def _close(self, code: int, rows: np.ndarray) -> None:
        if code < 0 or len(rows) < 2:
            return
        dev = rows - rows.mean(0)
        self.n_grouped += len(rows)
        self.grouped += dev.T @ dev

    def finish(self) -> None:
        """Close the group still open (after the last block)."""
        self._close(self.carry_code, self.carry_rows)
        self.carry_code, self.carry_rows = -1, np.zeros((0, self.dim))

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mean, Sigma_D, Sigma_S, Sigma_V)`` from the sums (call :meth:`finish` first)."""
        if len(self.carry_rows):
            raise InputError("a product group is still open: call finish() after the last block")
        if self.n < 2 or self.n_views == 0:
            raise InputError(f"learned whitening needs 2+ images and their views; got {self.n} images, "
                             f"{self.n_views} view pairs")
        mean = self.total / self.n
        data = self.outer / self.n - np.outer(mean, mean)
        same = (self.views + self.grouped) / (self.n_views + self.n_grouped)
        return mean, data, same, self.views / self.n_views

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("dim", "n", "total", "outer", "n_views", "views", "n_grouped", "grouped",
                                             "carry_code", "carry_rows")}

    @classmethod
    def from_state(cls, state: dict) -> WhiteningStats:
        return cls(**state)


class WhiteningProjector(nn.Module):
    """``f -> (sign(f) |f|^p - mean) W`` as a torch module (exported after the backbone; the encoder normalises)."""

    def __init__(self, mean: np.ndarray, weight: np.ndarray, power: float = 0.5) -> None:
        super().__init__()
        self.power = float(power)
        self.linear = nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T)).float())
            self.linear.bias.copy_(torch.from_numpy(-(mean @ weight)).float())

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.power != 1.0:
            f = torch.sign(f) * f.abs().pow(self.power)
        return self.linear(f)
