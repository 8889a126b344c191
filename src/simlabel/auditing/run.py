"""``simlabel.audit``: every issue type of :mod:`simlabel.auditing.core` over one catalog, its store and its graph.

Inputs are the catalog (images, and the ``split`` column), the embedding store (its vectors, ``errors.csv`` and the
image measures its decode pass recorded, :func:`simlabel.store.read_quality`) and the k-NN graph (built on the fly
by the one neighbour rule when none is given). Nothing is decoded again.

Output folder (written as one unit)::

    AUDIT_DIR/issues.parquet   one row per (item, issue type) scored: id, issue, score (0..1, lower = worse), flagged,
                               value (what was measured), group (duplicates), evidence (ids, reasons)
    AUDIT_DIR/summary.json     counts per type, cuts, per-class counts and health, leakage, non-IID test
    AUDIT_DIR/report.html      with ``html``: a section per type with the worst items beside their evidence
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.auditing.core import (
    class_distances,
    class_imbalance,
    ids_in,
    leakage,
    near_duplicates,
    non_iid,
    outliers,
    pixel_twins,
    related_ids,
    robust_scores,
)
from simlabel.catalog import Catalog, load_catalog
from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import InputError
from simlabel.files import atomic_dir, atomic_write_json, exclusive
from simlabel.quality import PHASH_BITS, QUALITY_FIELDS, QUALITY_VERSION, split_signature
from simlabel.remote import writes_to_url
from simlabel.store import ERRORS, Embeddings, as_embeddings, read_quality, readable

__all__ = ["ISSUE_TYPES", "AuditConfig", "AuditResult", "audit"]

#: every issue type, in the report's order
ISSUE_TYPES = ("unreadable", "exact_duplicate", "near_duplicate", "leakage", "outlier", "far_from_labels", "dark",
               "bright", "low_information", "blurry", "grayscale", "odd_aspect_ratio", "odd_size", "label",
               "class_imbalance", "non_iid")
#: the image-quality types: (measure, its bad side, how it is read, the least spread it is judged with: a catalog
#: whose photos share one size must not flag a pixel's difference: aspect ratios count from 1.5x apart, areas from 2x,
#: information from half the median's bits: a catalog of plain garments on plain backgrounds packs its entropies
#: tightly, and a photo a little plainer than most is not a low-information one)
QUALITY_TYPES = {
    "dark": ("dark", "low", "99th percentile of max(R, G, B)", 0.0),
    "bright": ("bright", "high", "5th percentile of brightness", 0.0),
    "low_information": ("log_entropy", "low", "log2(1/64 + entropy of the grey histogram in bits)", 1.0 / 3.5),
    "blurry": ("blur", "low", "log10(1e-3 + variance of the Laplacian / variance of the grey), 128 px thumbnail", 0.0),
    "grayscale": ("colour", "low", "mean difference between the channels", 0.0),
    "odd_aspect_ratio": ("log_aspect", "both", "log(width / height)", float(np.log(1.5) / 3.5)),
    "odd_size": ("log_area", "both", "log(width x height)", float(np.log(2.0) / 3.5)),
}
COLUMNS = ["id", "issue", "score", "flagged", "value", "group", "evidence"]


@dataclass
class AuditConfig:
    """The audit's options; every cut but ``min_class_size`` is relative to the catalog's own distribution.

    Parameters
    ----------
    k : int
        Neighbours per item (from the graph, or searched).
    near_duplicate_fraction : float
        Near duplicates: edges under this fraction of the median nearest-neighbour distance (Datalab's 0.13), or
        whose photos' perceptual hashes differ in at most this fraction of the median nearest neighbour's bits.
    outlier_threshold : float
        Outliers: Datalab's ``t``, flagged above ``Q3 + (1 / t - 1) IQR`` of the mean k-NN distance.
    z : float
        Image quality and distance to the labels: the modified z-score a value must pass on its bad side.
    min_class_size : int
        A class with fewer labelled items is flagged.
    imbalance_threshold : float
        A class under ``imbalance_threshold / K`` of the labelled items is flagged (Datalab's 0.1).
    non_iid_permutations : int
        Random orders the non-IID statistic is compared with.
    train_split : str
        The split value that is training (leakage: the other splits' items with a near-twin in it).
    label_mode : str
        ``simlabel suspects``' k-NN mode for the label type: ``rank`` (SimiFeat's ranking by the estimated noise
        rates; its estimate costs O(K^3) a step: seconds for 141 classes on 2 cores) or ``vote``.
    seed : int
        Searches, the map's sample and the permutations.

    Examples
    --------
    >>> from simlabel import AuditConfig
    >>> AuditConfig(k=20, z=3.0).k
    20
    """

    k: int = 10
    near_duplicate_fraction: float = 0.13
    outlier_threshold: float = 0.37037
    z: float = 3.5
    min_class_size: int = 5
    imbalance_threshold: float = 0.1
    non_iid_permutations: int = 20
    train_split: str = "train"
    label_mode: str = "rank"
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int(self.k, "k")
        in_range(self.near_duplicate_fraction, "near_duplicate_fraction", 0, 1)
        in_range(self.outlier_threshold, "outlier_threshold", 0, 1, lo_open=True)
        in_range(self.z, "z", 0, np.inf, lo_open=True)
        positive_int(self.min_class_size, "min_class_size", minimum=0)
        in_range(self.imbalance_threshold, "imbalance_threshold", 0, 1)
        positive_int(self.non_iid_permutations, "non_iid_permutations")
        one_of(self.label_mode, ("rank", "vote"), "label_mode")


@dataclass
class AuditResult:
    """What :func:`audit` found.

    Parameters
    ----------
    issues : DataFrame
        One row per (item, scored type), the columns :data:`COLUMNS`: ``score`` in [0, 1], lower is worse.
    summary : dict
        Counts per type, the cuts and how each was chosen, per-class health, leakage, the non-IID test.
    out : Path, optional
        The folder written.
    coords : DataFrame, optional
        The catalog in 2-D (``id``, ``x``, ``y``: the embeddings' first two principal components), for the map.
    suspects : DataFrame, optional
        ``simlabel suspects``' table of the suspected labels (their review queue), where there were labels.

    Examples
    --------
    >>> import pandas as pd
    >>> from simlabel import AuditResult
    >>> r = AuditResult(pd.DataFrame({"id": ["a", "b"], "issue": ["dark", "dark"], "score": [0.1, 0.9],
    ...                               "flagged": [True, False]}), {})
    >>> r.flagged("dark")["id"].tolist()
    ['a']
    """

    issues: pd.DataFrame
    summary: dict
    out: Path | None = None
    coords: pd.DataFrame | None = None
    suspects: pd.DataFrame | None = None

    def flagged(self, issue: str | None = None) -> pd.DataFrame:
        """The flagged rows (of one type), worst first."""
        f = self.issues[self.issues["flagged"]]
        if issue is not None:
            f = f[f["issue"] == issue]
        return f.sort_values(["issue", "score"])


def _rows(ids: np.ndarray, issue: str, score: np.ndarray, flagged: np.ndarray, value: np.ndarray | None = None,
          group: np.ndarray | None = None, evidence: list[str] | np.ndarray | None = None) -> pd.DataFrame:
    n = len(ids)
    ids = np.asarray(ids, dtype=object)
    # one str object per id, shared by every type's rows (a million rows x 16 types of copies would not fit), and
    # the type as a category code
    return pd.DataFrame({
        "id": ids if all(isinstance(i, str) for i in ids) else ids.astype(str).astype(object),
        "issue": pd.Categorical.from_codes(np.full(n, ISSUE_TYPES.index(issue), dtype=np.int8),
                                           categories=list(ISSUE_TYPES)),
        "score": np.asarray(score, dtype=np.float64), "flagged": np.asarray(flagged, dtype=bool),
        "value": np.asarray(value, dtype=np.float64) if value is not None else np.full(n, np.nan),
        "group": np.asarray(group, dtype=np.int64) if group is not None else np.full(n, -1, dtype=np.int64),
        "evidence": np.asarray(evidence, dtype=object) if evidence is not None else np.full(n, "", dtype=object),
    })


def _neighbour_ids(ids: np.ndarray, nb: np.ndarray, sim: np.ndarray, shown: np.ndarray, top: int = 5) -> np.ndarray:
    """``id:similarity|...`` of the ``top`` nearest, for the ``shown`` rows only (the rest ``""``: a million rows
    of evidence nobody looks at would cost more memory than the audit itself)."""
    out = np.full(len(nb), "", dtype=object)
    for i in np.flatnonzero(shown):
        out[i] = "|".join(f"{ids[j]}:{s:.3f}" for j, s in zip(nb[i, :top], sim[i, :top]) if j >= 0)
    return out


def _shown(score: np.ndarray, flagged: np.ndarray, worst: int = 200) -> np.ndarray:
    """The rows a report or queue shows: the flagged ones and the ``worst`` lowest scores."""
    shown = np.asarray(flagged, dtype=bool).copy()
    shown[np.argsort(score, kind="stable")[:worst]] = True
    return shown


def _labels_of(catalog: Catalog, labels: str | os.PathLike | pd.DataFrame | None, label_col: str) -> pd.Series | None:
    """The labelled items' labels by id (from ``labels``, else the catalog's ``label_col`` if it has one)."""
    from simlabel.labels.io import read_labels

    if labels is None:
        if label_col not in catalog.table.columns:
            return None
        t = catalog.table[["id", label_col]].astype(str)
        t = t[t[label_col].str.strip() != ""]
        return pd.Series(t[label_col].to_numpy(), index=t["id"].to_numpy())
    df = labels if isinstance(labels, pd.DataFrame) else read_labels(labels, label_col=label_col)
    col = "label" if "label" in df.columns else label_col
    return pd.Series(df[col].astype(str).to_numpy(), index=df["id"].astype(str).to_numpy())


@writes_to_url("out")
def audit(catalog: str | os.PathLike | Catalog, emb: str | os.PathLike | Embeddings, *,
          graph: str | os.PathLike | object | None = None, labels: str | os.PathLike | pd.DataFrame | None = None,
          label_col: str = "label", split_col: str | None = None, config: AuditConfig | None = None,
          out: str | os.PathLike | None = None, html: bool = False) -> AuditResult:
    """Audit a catalog: duplicates, leakage, outliers, image quality, labels, balance and order.

    Parameters
    ----------
    catalog : path or Catalog
        The catalog (ids, images, and ``split_col``).
    emb : path or Embeddings
        Its image embeddings; a folder also gives ``errors.csv`` (unreadable images) and the image measures of its
        decode pass (without them the image-quality and exact-duplicate types are left out, and the summary says so).
    graph : path or KnnGraph, optional
        The k-NN graph of ``emb`` (default: built once, in memory, by :func:`simlabel.graph.build_graph`).
    labels : path or DataFrame, optional
        ``id`` and ``label_col`` (default: the catalog's ``label_col`` column, if any).
    split_col : str, optional
        The catalog column of each item's split (``train``, ``test``...): leakage is a near-duplicate group across it.
    label_col : str
        The labels' column (of ``labels``, else of the catalog).
    config : AuditConfig
    out : path, optional
        The folder to write (module docstring).
    html : bool
        Write ``report.html`` too.

    Returns
    -------
    AuditResult

    Raises
    ------
    InputError
        Fewer than 3 embedded items, embedded ids not in the catalog, a ``split_col`` that is not a column, an
        unreadable label file (naming it and the row).

    Examples
    --------
    >>> result = audit("catalog.csv", "emb/", split_col="split", out="audit/", html=True)  # doctest: +SKIP
    >>> result.flagged("near_duplicate")  # doctest: +SKIP
    """
    from simlabel.graph import GraphConfig, as_graph, build_graph, neighbours_for
    from simlabel.index import AUTO_FLAT_MAX, drop_self_matches

    cfg = config or AuditConfig()
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    store_dir = None if isinstance(emb, Embeddings) else Path(readable(emb))  # a URL: its local copy
    e = as_embeddings(emb if store_dir is None else store_dir)
    if len(e.ids) < 3:
        raise InputError(f"{e.source or 'emb'}: the audit needs 3 or more embedded items; got {len(e.ids)}")
    ids = e.ids.astype(str).astype(object)
    table = cat.table.set_index(cat.table["id"].astype(str))
    missing = ~ids_in(ids, table.index)
    if missing.any():
        raise InputError(f"{e.source or 'emb'}: {int(missing.sum())} embedded ids are not in the catalog "
                         f"{cat.path or cat.root}, e.g. {ids[missing][0]!r}")
    k = min(cfg.k, len(ids) - 1)
    # one graph answers every neighbour question below (the leak's vote, the nearest labelled item, suspects): built
    # once where none is given, never searched again
    # exact where exact search is affordable (duplicates and leaks are judged on the nearest neighbours), the
    # graph's tuned recall above it
    recall = 1.0 if len(ids) <= AUTO_FLAT_MAX else GraphConfig.recall
    graph = as_graph(graph) if graph is not None else build_graph(e, None, GraphConfig(k=k, seed=cfg.seed, recall=recall,
                                                                                       recall_sample=0),
                                                                  progress=False)
    nbrs = neighbours_for(e, k, graph=graph, seed=cfg.seed)
    nb, sim = nbrs.neighbors, nbrs.similarities
    frames: list[pd.DataFrame] = []
    summary: dict = {"n_items": int(len(ids)), "n_catalog": int(len(cat.table)), "k": int(k),
                     "config": asdict(cfg), "types": {}}

    # -- unreadable: the store's failures, with the decoder's reason
    if store_dir is not None and (store_dir / ERRORS).exists():
        err = pd.read_csv(store_dir / ERRORS, dtype=str, keep_default_na=False)
        if len(err):
            frames.append(_rows(err["id"].to_numpy(), "unreadable", np.zeros(len(err)), np.ones(len(err), bool),
                                evidence=err["reason"].to_numpy()))
    # -- exact duplicates: the file's bytes, then the decoded pixels
    quality = read_quality(store_dir) if store_dir is not None else pd.DataFrame({"id": []})
    quality = quality.drop_duplicates("id", keep="last").set_index("id").reindex(ids)
    measured = quality[list(QUALITY_FIELDS)].notna().all(axis=1).to_numpy() if len(quality.columns) > 1 else \
        np.zeros(len(ids), bool)
    # measures taken by another version of simlabel.quality mean other things: left out, and counted
    current = (quality["quality_version"] == QUALITY_VERSION).to_numpy() if "quality_version" in quality.columns else \
        np.zeros(len(ids), bool)
    summary["n_stale_measures"] = int((measured & ~current).sum())
    measured = measured & current
    summary["n_measured"] = int(measured.sum())
    if measured.any():
        # the pixel signature, split once: its digest for the exact duplicates, its perceptual hash for the near ones
        signature = quality["pixel_hash"].fillna("").astype(str)
        digest, packed = split_signature(signature.to_numpy())
        # one photo is one pixel digest, whatever its bytes; a shared file hash says the files are copies too
        codes, uniq = pd.factorize(pd.Series(np.where(measured, digest, ""), dtype=str))
        dup = measured & (np.bincount(codes, minlength=len(uniq))[codes] >= 2)
        group = np.where(dup, codes, -1)
        content = quality["content_hash"].fillna("").astype(str)
        same_bytes = (content != "").to_numpy() & content.map(content.value_counts()).ge(2).to_numpy()
        members = pd.Series(ids[dup]).groupby(group[dup]).agg("|".join)
        evidence = [("same bytes: " if b else "same pixels: ") + members.get(g, "") for b, g in zip(same_bytes[dup], group[dup])]
        frames.append(_rows(ids[dup], "exact_duplicate", np.zeros(dup.sum()), np.ones(dup.sum(), bool),
                            group=group[dup], evidence=evidence))
    # -- near duplicates, along the graph's edges
    # a second witness, in the pixels: photos whose perceptual hashes nearly agree (a resized copy can sit as far
    # from its original in the embedding as an ordinary neighbour does)
    twins, pixel_rule = None, {}
    if measured.any():
        hashed = measured & (signature.str.len() == 96).to_numpy()
        if hashed.sum() >= 2:
            twins, bits_cut, bits_median = pixel_twins(nb, packed, hashed, fraction=cfg.near_duplicate_fraction)
            pixel_rule = {"pixel_cut_bits": bits_cut, "pixel_median_bits": bits_median,
                          "pixel_rule": f"or perceptual hashes within {cfg.near_duplicate_fraction} x the median "
                                        f"Hamming distance to the nearest neighbour ({bits_cut:.1f} of {PHASH_BITS} "
                                        "bits)"}
    near = near_duplicates(nb, sim, fraction=cfg.near_duplicate_fraction, witness=twins)
    in_group = near.group >= 0
    # each group lists its members with their labels and splits, the evidence a person decides by
    y = _labels_of(cat, labels, label_col)
    if split_col is not None and split_col not in table.columns:
        raise InputError(f"{cat.path or cat.root}: `split_col` {split_col!r} is not a column")
    split = table[split_col].reindex(ids).fillna("").astype(str).to_numpy() if split_col is not None else None
    lab = y.reindex(ids).fillna("").astype(str).to_numpy() if y is not None else np.full(len(ids), "")
    sp = split if split is not None else np.full(len(ids), "")
    tags = [", ".join(v for v in (a, b) if v) for a, b in zip(lab, sp)]
    named = np.array([f"{i} ({t})" if t else i for i, t in zip(ids, tags)], dtype=object)
    gmembers = pd.Series(named[in_group]).groupby(near.group[in_group]).agg("|".join)
    frames.append(_rows(ids, "near_duplicate", near.score, in_group, value=near.nn_distance, group=near.group,
                        evidence=[gmembers.get(g, "") if g >= 0 else "" for g in near.group]))
    summary["types"]["near_duplicate"] = {"cut_distance": near.cut, "median_nn_distance": near.median_nn_distance,
                                          "rule": f"{cfg.near_duplicate_fraction} x the median nearest-neighbour "
                                                  "cosine distance", "groups": int(len(gmembers)), **pixel_rule}
    summary["nn_distance_histogram"] = np.histogram(np.nan_to_num(near.nn_distance), bins=40)[0].tolist()
    # -- leakage across the split
    if split is not None:
        leaked = leakage(near.group, split, train=cfg.train_split)
        frames.append(_rows(ids[leaked], "leakage", np.zeros(leaked.sum()), np.ones(leaked.sum(), bool),
                            group=near.group[leaked], evidence=[gmembers.get(g, "") for g in near.group[leaked]]))
        summary["leakage"] = _leak_summary(ids, nb, split, leaked, y, cfg)
    # -- outliers
    score, flagged, mean_d, cut = outliers(sim, threshold=cfg.outlier_threshold)
    frames.append(_rows(ids, "outlier", score, flagged, value=mean_d,
                        evidence=_neighbour_ids(ids, nb, sim, _shown(score, flagged))))
    summary["types"]["outlier"] = {"cut_mean_distance": cut, "rule": f"Q3 + {1 / cfg.outlier_threshold - 1:.2f} IQR "
                                   f"of the mean cosine distance to the {k} nearest"}
    # -- far from every labelled class: the Mahalanobis distance to the nearest class (core.class_distances)
    if y is not None:
        y = y[ids_in(y.index, ids)]
    if y is not None and y.nunique() >= 1 and len(y) >= 2:
        codes, classes = pd.factorize(y.reindex(ids))
        dist, nearest_class = class_distances(e.matrix, codes, len(classes), min_count=max(cfg.min_class_size, 2),
                                              seed=cfg.seed)
        s_far, f_far, c_far = robust_scores(dist, side="high", z=cfg.z)
        # an item of a class too small to have a mean is far from every other class by its nature: the
        # class_imbalance type reports it, with its class's count
        sizes = np.bincount(codes[codes >= 0], minlength=len(classes))
        small = (codes >= 0) & (sizes[np.maximum(codes, 0)] < max(cfg.min_class_size, 2))
        s_far, f_far = np.where(small, 1.0, s_far), f_far & ~small
        # the evidence a person judges by: the nearest class, and the nearest labelled items beside the photo
        shown = _shown(s_far, f_far) & (nearest_class >= 0)
        lab_pos = np.flatnonzero(codes >= 0)
        evidence = np.full(len(ids), "", dtype=object)
        if shown.any():
            at = neighbours_for(e, min(4, len(lab_pos)), rows=np.flatnonzero(shown), among=lab_pos, graph=graph,
                                seed=cfg.seed)
            # a labelled row's nearest labelled row is itself: left out
            nb_l = np.where(at.neighbors >= 0, lab_pos[np.maximum(at.neighbors, 0)], -1)
            sims_l, nb_l = drop_self_matches(at.similarities, nb_l, np.flatnonzero(shown))
            names = np.asarray(classes, dtype=object)
            items = _neighbour_ids(ids, nb_l, sims_l, np.ones(len(nb_l), bool), top=3)
            for i, row in enumerate(np.flatnonzero(shown)):
                evidence[row] = f"nearest class: {names[nearest_class[row]]} at {dist[row]:.2f}; {items[i]}"
        frames.append(_rows(ids, "far_from_labels", s_far, f_far, value=dist, evidence=evidence))
        summary["types"]["far_from_labels"] = {
            "cut_distance": c_far, "median_distance": float(np.nanmedian(dist)) if np.isfinite(dist).any() else None,
            "rule": f"the Mahalanobis distance to the nearest class of {max(cfg.min_class_size, 2)} or more labelled "
                    f"items (one shared covariance, Ledoit-Wolf shrinkage), high by the modified z-score (> {cfg.z}); "
                    "items of smaller classes are class_imbalance's", "n_in_small_classes": int(small.sum())}
    # -- image quality, against the catalog's own spread
    if measured.any():
        q = quality.loc[ids[measured]]
        values = {f: q[f].to_numpy(dtype=np.float64) for f in QUALITY_FIELDS}
        values["log_aspect"] = np.log(np.maximum(values["width"], 1) / np.maximum(values["height"], 1))
        values["log_area"] = np.log(np.maximum(values["width"] * values["height"], 1))
        # information is judged on a log scale: a blank photo (0 bits) is far below a white-background one (2 bits)
        # even where most photos have little
        values["log_entropy"] = np.log2(1 / 64 + values["entropy"])
        for issue, (field, side, what, floor) in QUALITY_TYPES.items():
            s_q, f_q, c_q = robust_scores(values[field], side=side, z=cfg.z, min_scale=floor)
            frames.append(_rows(ids[measured], issue, s_q, f_q, value=values[field]))
            summary["types"][issue] = {"measure": what, "side": side, "cut": c_q,
                                       "median": float(np.median(values[field]))}
    # -- labels: suspects, and classes too small or too rare
    suspects = None
    if y is not None and y.nunique() >= 2:
        label_rows, suspects = _label_rows(e, y, graph, cfg, summary)
        frames.append(label_rows)
    # -- order: do neighbours sit together in the catalog's order?
    order = pd.Index(ids).get_indexer(table.index[ids_in(table.index, ids)])
    by_order = np.empty(len(ids), dtype=np.int64)
    by_order[order] = np.arange(len(order))
    nb_in_order = np.full_like(nb, -1)
    nb_in_order[by_order] = np.where(nb >= 0, by_order[np.maximum(nb, 0)], -1)
    p, stat, s_iid, f_iid = non_iid(nb_in_order, permutations=cfg.non_iid_permutations, seed=cfg.seed)
    frames.append(_rows(ids[order], "non_iid", s_iid, f_iid))
    summary["types"]["non_iid"] = {"p_value": p, "ks_statistic": stat, "permutations": cfg.non_iid_permutations}

    issues = pd.concat([f for f in frames if len(f)], ignore_index=True)
    counts = issues[issues["flagged"]].groupby("issue", observed=False).size()
    summary["counts"] = {str(t): int(counts.get(t, 0)) for t in ISSUE_TYPES}
    summary["flagged_items"] = int(issues.loc[issues["flagged"], "id"].nunique())
    result = AuditResult(issues, summary, coords=_map(e, ids, cfg.seed), suspects=suspects)
    if out is not None:
        result.out = _write(result, Path(out), cat, html)
    return result


def _map(e: Embeddings, ids: np.ndarray, seed: int, sample: int = 20_000, block: int = 65_536) -> pd.DataFrame:
    """The first two principal components of the embeddings (fitted on a sample of at most ``sample`` rows),
    projected a block at a time (no float64 copy of the whole matrix)."""
    rng = np.random.default_rng(seed)
    X = e.matrix
    fit = X[np.sort(rng.choice(len(X), size=min(sample, len(X)), replace=False))].astype(np.float64)
    mu = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mu, full_matrices=False)
    w = vt[:2].T.astype(np.float32)
    xy = np.concatenate([X[i:i + block] @ w for i in range(0, len(X), block)]) - (mu @ vt[:2].T).astype(np.float32)
    return pd.DataFrame({"id": ids, "x": xy[:, 0], "y": xy[:, 1]})


def _leak_summary(ids: np.ndarray, nb: np.ndarray, split: np.ndarray, leaked: np.ndarray, y: pd.Series | None,
                  cfg: AuditConfig) -> dict:
    """How many non-training items have a near-twin in training, and the k-NN accuracy on them with and without.

    The vote is that of each test item's graph neighbours that are labelled training items (a search among the
    training items alone would mean an exact search per test item at a million rows; the graph's neighbours are
    those a search would rank first)."""
    test = split != cfg.train_split
    out = {"n_train": int((~test).sum()), "n_other": int(test.sum()), "n_leaked": int(leaked.sum())}
    if y is None:
        return out
    codes, classes = pd.factorize(y.reindex(ids), use_na_sentinel=True)
    train_lab = (codes >= 0) & ~test
    test_pos = np.flatnonzero((codes >= 0) & test)
    if not train_lab.any() or len(test_pos) < 1:
        return out
    sub = nb[test_pos]
    vote = np.where((sub >= 0) & train_lab[np.maximum(sub, 0)], codes[np.maximum(sub, 0)], -1)
    ok = vote.ravel() >= 0
    row = np.repeat(np.arange(len(test_pos)), sub.shape[1])[ok]
    counts = np.bincount(row * len(classes) + vote.ravel()[ok],
                         minlength=len(test_pos) * len(classes)).reshape(len(test_pos), len(classes))
    # the plain majority (ties: the first class in the labels' order); no labelled training neighbour: no vote
    pred = np.where(counts.any(axis=1), counts.argmax(axis=1), -1)
    right = pred == codes[test_pos]
    clean = ~leaked[test_pos]
    out.update({"knn_accuracy_all": float(right.mean()),
                "knn_accuracy_without_leaked": float(right[clean].mean()) if clean.any() else None,
                "n_test_labelled": int(len(test_pos)), "n_test_leaked": int((~clean).sum()),
                "n_test_without_vote": int((~counts.any(axis=1)).sum()),
                "accuracy_model": f"the majority of the labelled training items among the {sub.shape[1]} graph "
                                  "neighbours"})
    return out


def _label_rows(e: Embeddings, y: pd.Series, graph, cfg: AuditConfig, summary: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """suspects' k-NN findings, per-class health, and the classes too small or too rare."""
    from simlabel.labels.suspects import SuspectsConfig, find_suspects

    labels = pd.DataFrame({"id": y.index.astype(str), "label": y.to_numpy()})
    found = find_suspects(e, labels, SuspectsConfig(method="knn", k=min(cfg.k, len(labels) - 1), mode=cfg.label_mode,
                                                   seed=cfg.seed),
                          graph=graph, all_items=True)
    # every labelled item, scored: the suspects are those ranked
    t = found.labels
    suspect = t["rank"].notna().to_numpy()
    # suspects' score grows with the doubt; the audit's falls with it
    score = 1.0 - t["score"].astype(float).fillna(0.0).to_numpy()
    evidence = [f"{lab} -> {sug}; {nids}" if s else "" for lab, sug, nids, s in
                zip(t["label"], t["suggested"], t["neighbor_ids"], suspect)]
    rows = [_rows(t["id"].to_numpy(), "label", score, suspect, evidence=evidence)]
    counts, cls_score, small = class_imbalance(y.to_numpy(), threshold=cfg.imbalance_threshold,
                                               min_count=cfg.min_class_size)
    per = pd.DataFrame({"label": t["label"].to_numpy(), "suspect": suspect}).groupby("label")["suspect"].agg(["sum", "size"])
    summary["classes"] = {c: {"count": counts[c], "suspects": int(per.loc[c, "sum"]) if c in per.index else 0,
                              "health": float(1 - per.loc[c, "sum"] / per.loc[c, "size"]) if c in per.index else 1.0,
                              "imbalance_score": cls_score[c], "flagged": c in small} for c in counts}
    summary["label_health"] = float(1 - suspect.mean())
    summary["types"]["class_imbalance"] = {"flagged_classes": small, "rule": f"under {cfg.imbalance_threshold} / K of "
                                           f"the labelled items or under {cfg.min_class_size} items"}
    lab = y.to_numpy()
    in_small = np.isin(lab, small)
    rows.append(_rows(y.index.to_numpy()[in_small], "class_imbalance",
                      np.array([cls_score[c] for c in lab[in_small]]), np.ones(in_small.sum(), bool),
                      value=np.array([counts[c] for c in lab[in_small]]),
                      evidence=[f"{c}: {counts[c]} items" for c in lab[in_small]]))
    return pd.concat(rows, ignore_index=True), t[suspect]


def _write(result: AuditResult, out: Path, cat: Catalog, html: bool) -> Path:
    from simlabel.auditing.page import write_audit_html

    with exclusive(out), atomic_dir(out) as tmp:
        result.issues.to_parquet(tmp / "issues.parquet", index=False)
        if result.coords is not None:
            result.coords.to_parquet(tmp / "map.parquet", index=False)
        atomic_write_json(tmp / "summary.json", result.summary)
        _write_queues(result, tmp / "queues", cat)
        if html:
            write_audit_html(result, cat, tmp / "report.html")
    return out


def _write_queues(result: AuditResult, folder: Path, cat: Catalog) -> None:
    """One review queue per type with flagged items: ``<issue>.csv`` (the ``audit`` kind of
    :mod:`simlabel.review.queues`: id, issue, score, flagged, value, evidence, related, label), and ``labels.csv``
    in ``suspects``' shape, so a fixed label flows back as ``review export --format labels`` does."""
    folder.mkdir()
    label = cat.table.set_index(cat.table["id"].astype(str)).get("label")
    for issue, rows in result.flagged().groupby("issue", observed=True):
        if issue == "label":
            continue
        q = rows.sort_values("score").copy()
        q["related"] = ["|".join(i for i in related_ids(str(issue), ev) if i != x) for x, ev in zip(q["id"], q["evidence"])]
        q["label"] = label.reindex(q["id"]).fillna("").to_numpy() if label is not None else ""
        q["issue"] = q["issue"].astype(str)
        q.to_csv(folder / f"{issue}.csv", index=False)
    if result.suspects is not None and len(result.suspects):
        result.suspects.to_csv(folder / "labels.csv", index=False)
