r"""Multi-label targets and simulated label noise (paper 004, SELF-ML, sections 2-3).

SELF-ML learns from a large set ``N`` whose multi-labels are noisy, mostly
*missing* (the paper's real data has 1.28 attribute annotations per image in
``N`` against 3.40 in the clean set ``C``), and a small cleanly annotated set
``C`` (about 5 % of the data, split 75 | 25 into train | test like ``N``).

This module simulates how shops lose the labels of a binary label matrix ``Y``
(``n`` images x ``L`` labels, :mod:`simlabel.labels.multilabel`) and draws the C/N splits.

Noise model of :func:`simulate_missing_labels`, for entry :math:`(i, l)` of
label :math:`l` of attribute :math:`a(l)`:

.. math:: \tilde y_{il} = \begin{cases}
            y_{il} \, [u_{il} \ge d_{a(l)}] & y_{il} = 1 \quad \text{(dropped with prob. } d_a) \\
            [v_{il} < \varepsilon] & y_{il} = 0 \quad \text{(false positive with prob. } \varepsilon)
          \end{cases}

with :math:`u, v` independent uniforms. Drops dominate, as in the paper's data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from simlabel.metrics import check_binary_matrix


def _attribute_drop_rates(
    Y: np.ndarray,
    attr_idx: np.ndarray,
    attrs: list[str],
    drop_rate: float | Mapping[str, float],
    drop_rates_range: tuple[float, float] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """One drop probability per attribute (see :func:`simulate_missing_labels`)."""
    m = len(attrs)
    if isinstance(drop_rate, Mapping):
        unknown = set(drop_rate) - set(attrs)
        absent = [a for a in attrs if a not in drop_rate]
        if unknown or absent:
            raise ValueError(f"drop_rate mapping must name every attribute; unknown {sorted(unknown)}, absent {absent}")
        rates = np.array([float(drop_rate[a]) for a in attrs])
    elif drop_rates_range is None:
        rates = np.full(m, float(drop_rate))
    else:
        lo, hi = map(float, drop_rates_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"drop_rates_range must satisfy 0 <= lo <= hi <= 1, got {drop_rates_range}")
        # Rarely queried attributes lose more: the draws, sorted high to low, go to the
        # attributes sorted by positive count low to high (ties: first attribute first).
        draws = np.sort(rng.uniform(lo, hi, size=m))[::-1]
        counts = np.bincount(attr_idx, weights=Y.sum(axis=0), minlength=m)
        rates = np.empty(m)
        rates[np.argsort(counts, kind="stable")] = draws
    if ((rates < 0) | (rates > 1)).any():
        raise ValueError(f"drop rates must lie in [0, 1], got {rates}")
    return rates


def simulate_missing_labels(
    Y: np.ndarray,
    attribute_of: Sequence[str],
    *,
    drop_rate: float | Mapping[str, float] = 0.5,
    drop_rates_range: tuple[float, float] | None = (0.2, 0.8),
    false_positive_rate: float = 0.01,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Noisy labels the way shops lose them: missing positives, a few spurious ones.

    Each positive of attribute ``a`` is dropped independently with probability
    ``d_a``; each negative entry becomes a false positive with probability
    ``false_positive_rate`` (false positives are drawn on the clean negatives,
    so a dropped positive is never re-added).

    The per-attribute rates ``d_a``, in order of precedence:

    * ``drop_rate`` as a mapping ``{attribute: rate}`` (must name every attribute);
    * ``drop_rates_range=(lo, hi)`` (the default): each attribute draws a rate
      uniformly from ``[lo, hi]`` (seeded), and the draws are handed out by
      rarity, the highest to the attribute with the fewest positives, since
      rarely queried attributes are the ones nobody fills in;
    * ``drop_rates_range=None``: the scalar ``drop_rate`` for all attributes.

    Returns
    -------
        ``(Y_noisy, info)``: ``Y_noisy`` uint8 of ``Y``'s shape; ``info`` holds
        ``drop_rates`` and ``realised_drop_rates`` per attribute,
        ``positives_per_attribute``, ``n_positive``, ``n_dropped``,
        ``n_false_positive``, ``realised_false_positive_rate`` and
        ``positives_per_image_clean`` / ``_noisy`` (paper: 3.40 vs 1.28).
    """
    Yb = check_binary_matrix(Y)
    n, L = Yb.shape
    attribute_of = [str(a) for a in attribute_of]
    if len(attribute_of) != L:
        raise ValueError(f"attribute_of has {len(attribute_of)} entries for {L} labels")
    if not 0.0 <= false_positive_rate <= 1.0:
        raise ValueError(f"false_positive_rate must lie in [0, 1], got {false_positive_rate}")
    attrs = list(dict.fromkeys(attribute_of))
    attr_idx = np.array([attrs.index(a) for a in attribute_of], dtype=np.intp)
    rng = np.random.default_rng(seed)
    rates = _attribute_drop_rates(Yb, attr_idx, attrs, drop_rate, drop_rates_range, rng)

    # Two independent uniforms per entry: one decides drops, the other false positives.
    dropped = Yb & (rng.random((n, L)) < rates[attr_idx][None, :])
    spurious = ~Yb & (rng.random((n, L)) < false_positive_rate)
    noisy = (Yb & ~dropped) | spurious

    pos_attr = np.bincount(attr_idx, weights=Yb.sum(axis=0), minlength=len(attrs))
    drop_attr = np.bincount(attr_idx, weights=dropped.sum(axis=0), minlength=len(attrs))
    n_neg = int((~Yb).sum())
    info = {
        "drop_rates": {a: float(r) for a, r in zip(attrs, rates)},
        "realised_drop_rates": {
            a: float(d / p) if p else float("nan") for a, d, p in zip(attrs, drop_attr, pos_attr)
        },
        "positives_per_attribute": {a: int(p) for a, p in zip(attrs, pos_attr)},
        "false_positive_rate": float(false_positive_rate),
        "n_positive": int(Yb.sum()),
        "n_dropped": int(dropped.sum()),
        "n_false_positive": int(spurious.sum()),
        "realised_false_positive_rate": float(spurious.sum() / n_neg) if n_neg else float("nan"),
        "positives_per_image_clean": float(Yb.sum(axis=1).mean()) if n else float("nan"),
        "positives_per_image_noisy": float(noisy.sum(axis=1).mean()) if n else float("nan"),
        "seed": int(seed),
    }
    return noisy.astype(np.uint8), info


def clean_noisy_split(n: int, n_clean: int, *, test_frac: float = 0.25, seed: int = 0) -> dict[str, np.ndarray]:
    """Random clean set ``C`` of ``n_clean`` images, noisy set ``N`` of the rest, each split train | test.

    Paper 004, section 3: ``|C|`` is about 5 % of the data and both sets are
    split 75 | 25; models are evaluated on ``C_test``. The test part of each
    set has ``round(test_frac * size)`` images. Index arrays are sorted.

    Returns
    -------
        ``{"clean_train", "clean_test", "noisy_train", "noisy_test"}``, disjoint
        and covering ``range(n)``.
    """
    if n < 0 or not 0 <= n_clean <= n:
        raise ValueError(f"need 0 <= n_clean <= n, got n={n}, n_clean={n_clean}")
    if not 0.0 <= test_frac <= 1.0:
        raise ValueError(f"test_frac must lie in [0, 1], got {test_frac}")
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, np.ndarray] = {}
    for name, part in (("clean", perm[:n_clean]), ("noisy", perm[n_clean:])):
        n_test = int(round(test_frac * len(part)))
        out[f"{name}_train"] = np.sort(part[n_test:])
        out[f"{name}_test"] = np.sort(part[:n_test])
    return {k: out[k] for k in ("clean_train", "clean_test", "noisy_train", "noisy_test")}


def drop_systematically(
    Y: np.ndarray,
    attribute_of: Sequence[str],
    groups: Sequence[str] | np.ndarray,
    *,
    share: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Content-dependent label loss: for each attribute, a seeded ``share`` of the product groups
    (e.g. article types) never carry that attribute's labels at all.

    This is the paper's systematic case ("none of the jackets had positive annotations for Round
    Neck or Long Sleeved", section 3): unlike :func:`simulate_missing_labels`' independent drops,
    the loss follows what the image shows, so it biases a classifier's ranking, not only its
    calibration. Returns the reduced ``Y`` and, per attribute, the groups that lost it.
    """
    Yb = check_binary_matrix(Y)
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1]; got {share}")
    groups = np.asarray(groups).astype(str)
    if groups.shape != (Yb.shape[0],):
        raise ValueError(f"groups must have one entry per row ({Yb.shape[0]}); got {groups.shape}")
    attribute_of = np.asarray(attribute_of)
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    out = Yb.copy()
    lost: dict[str, list[str]] = {}
    for attr in dict.fromkeys(attribute_of):  # attributes in label order, each once
        chosen = rng.choice(names, size=int(round(share * len(names))), replace=False)
        rows = np.isin(groups, chosen)
        out[np.ix_(rows, attribute_of == attr)] = False
        lost[str(attr)] = sorted(map(str, chosen))
    return out.astype(np.uint8), {"share": share, "groups_without": lost, "n_dropped": int((Yb & ~out).sum())}
