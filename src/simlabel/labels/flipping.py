"""Noisy multi-labels flipped and explained (paper 004): the job behind ``simlabel flip``.

The method, SELF-ML (the explainable reconstruction, the basis and its labels, the flipping model and
their joint training), is :mod:`simlabel.labels.selfml`. This module holds what a user gets from it:

* :func:`explain_flips`: for each changed label, the basis vectors with the largest coefficients and
  their labels (the paper's section 2, "Explaining Label Flips");
* :func:`flip`: catalog and embeddings in, the flips with their explanations out (a CSV and, through
  ``render``, a page). It is handed the classifier's pre-training as a function and never renders
  HTML itself (the explanation page is :func:`simlabel.report.write_flip_html`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simlabel.catalog import Catalog, load_catalog
from simlabel.errors import InputError, LabelFileError
from simlabel.files import atomic_write_text, exclusive, write_set
from simlabel.labels.io import labels_csv
from simlabel.labels.multilabel import (
    from_attributes,
    from_labels_column,
    read_multilabel_file,
)
from simlabel.labels.selfml import (
    Pretrain,
    SelfMLConfig,
    basis_query,
    basis_vectors,
    coefficients,
    correct_labels,
    direct_rule,
    fit_reconstruction,
    fit_selfml,
    used_basis,
)
from simlabel.store import Embeddings, as_embeddings

__all__ = ["Explanation", "explain_flips", "flip"]

# --------------------------------------------------------------------------- explanations


@dataclass
class Explanation:
    """Why label ``label`` of row ``row`` went from ``old`` to ``new``.

    ``confidence``: the probability of the new value (``p`` if ``new == 1`` else ``1 - p``).
    ``basis``: the basis vectors with the largest coefficients in the row (non-zero ones only, at
    most ``top``), ``weights`` their :math:`c_i` in descending order, ``basis_labels`` their value
    of this label (``Y_B[basis, label]``).
    """

    row: int
    label: int
    old: int
    new: int
    confidence: float
    basis: list[int]
    weights: list[float]
    basis_labels: list[int]


def explain_flips(
    C: np.ndarray,
    Y_noisy: np.ndarray,
    Y_new: np.ndarray,
    probs: np.ndarray,
    Y_B: np.ndarray,
    *,
    top: int = 3,
) -> list[Explanation]:
    """One :class:`Explanation` per entry where ``Y_new != Y_noisy`` (row-major order).

    The paper's explanation (section 2, Fig. 1): the few basis images the row is reconstructed
    from, with their weights and their verified value of the flipped label. ``probs``: the
    probabilities behind ``Y_new`` (the flipper's :math:`\\hat f_i` or the direct rule's scores).
    """
    C = np.asarray(C, dtype=np.float32)
    Y_noisy, Y_new, probs, Y_B = (np.asarray(a) for a in (Y_noisy, Y_new, probs, Y_B))
    if C.ndim != 2 or Y_B.ndim != 2 or C.shape[1] != Y_B.shape[0]:
        raise InputError(f"C (n, n_B) and Y_B (n_B, L) do not match: {C.shape} and {Y_B.shape}")
    shape = (C.shape[0], Y_B.shape[1])
    for name, a in (("Y_noisy", Y_noisy), ("Y_new", Y_new), ("probs", probs)):
        if a.shape != shape:
            raise InputError(f"{name} must have shape {shape}, got {a.shape}")
    if top < 1:
        raise InputError(f"top must be >= 1, got {top}")
    rows, labels = np.nonzero(Y_noisy != Y_new)
    if len(rows) == 0:
        return []
    urows, inverse = np.unique(rows, return_inverse=True)
    k = min(top, C.shape[1])
    sub = C[urows]
    # argpartition finds the k largest per row in O(n_B); only those k are then sorted.
    part = np.argpartition(-sub, k - 1, axis=1)[:, :k] if k < C.shape[1] else np.tile(np.arange(k), (len(urows), 1))
    w = np.take_along_axis(sub, part, axis=1)
    order = np.argsort(-w, axis=1, kind="stable")
    part, w = np.take_along_axis(part, order, axis=1), np.take_along_axis(w, order, axis=1)
    out = []
    for r, lab, u in zip(rows.tolist(), labels.tolist(), inverse.reshape(-1).tolist()):
        keep = w[u] > 0  # a zero coefficient explains nothing (sparsemax rows may use fewer than `top`)
        idx, wt = part[u][keep], w[u][keep]
        new = int(Y_new[r, lab])
        p = float(probs[r, lab])
        out.append(
            Explanation(
                row=r,
                label=lab,
                old=int(Y_noisy[r, lab]),
                new=new,
                confidence=p if new == 1 else 1.0 - p,
                basis=idx.tolist(),
                weights=wt.astype(float).tolist(),
                basis_labels=Y_B[idx, lab].astype(int).tolist(),
            )
        )
    return out


# -- files in, files out ------------------------------------------------------------------------


FLIP_COLUMNS = ["id", "label", "attribute", "old", "new", "confidence", "basis", "weights", "basis_labels"]


@dataclass
class Flipped:
    """What :func:`flip` made: the changed labels with their explanations, and a summary.

    Parameters
    ----------
    labels : pandas.DataFrame
        The changed labels, one row per flip: ``id, label, attribute, old, new, confidence,
        basis, weights, basis_labels``. ``old``/``new`` are 0 or 1, ``confidence`` the
        probability of the new value; ``basis`` the ids of the basis images with the largest
        coefficients (at most ``top``, ``;``-separated), ``weights`` their coefficients and
        ``basis_labels`` their value of this label: the explanation. Empty when the run
        exported the basis to label.
    summary : dict
        ``mode`` (``joint``: trained with a clean set; ``direct``: the rule on labelled basis
        images; ``export``: the basis written for labelling) and the counts (``n_items``,
        ``n_checked``, ``n_labels``, ``flips``, ``added``, ``removed``, ``by_attribute``; in
        export mode ``basis_used`` and ``basis_images``): what ``<out>.summary.json`` records.
    basis_to_label : pandas.DataFrame or None, default None
        With ``export_basis``: the images nearest the used basis vectors, a catalog to label
        (``id``, ``image``/``title`` where the catalog has them, ``basis_index``, empty
        ``labels``).
    classifier : torch.nn.Module or None, default None
        Joint mode: the multi-label classifier SELF-ML trained (``(n, d) -> (n, L)`` logits);
        :func:`simlabel.training.save_flip_model` saves it for ``simlabel predict``.
    label_names : list of str or None, default None
        The ``L`` labels, in the classifier's column order.
    embeddings_meta : dict or None, default None
        The metadata of the embeddings it read (their space, model and source): what the saved
        model records.

    Notes
    -----
    ``len()`` is the number of flips. Indexing it directly (as the table :func:`flip` returned
    before) still works, with a :class:`DeprecationWarning`.

    Examples
    --------
    Built by hand here; :func:`flip` makes it.

    >>> import pandas as pd
    >>> from simlabel import Flipped
    >>> flips = pd.DataFrame([{"id": "17", "label": "usage=Sports", "attribute": "usage", "old": 0, "new": 1,
    ...                        "confidence": 0.93, "basis": "4;9", "weights": "0.610;0.390", "basis_labels": "1;1"}])
    >>> made = Flipped(flips, {"mode": "direct", "flips": 1})
    >>> len(made), made.labels["label"].tolist()
    (1, ['usage=Sports'])
    """

    labels: pd.DataFrame
    summary: dict
    basis_to_label: pd.DataFrame | None = None
    classifier: object | None = None
    label_names: list[str] | None = None
    embeddings_meta: dict | None = None

    def __getitem__(self, key):
        # flip returned the table itself before; scripts indexing it keep working
        warnings.warn("flip() returns a Flipped (labels, summary, basis_to_label); index its .labels",
                      DeprecationWarning, stacklevel=2)
        return (self.labels if self.basis_to_label is None else self.basis_to_label)[key]

    def __len__(self) -> int:
        return len(self.labels)


def flip(
    emb: str | os.PathLike | Embeddings,
    catalog: str | os.PathLike | Catalog,
    *,
    attributes: Sequence[str] | None = None,
    labels_col: str = "labels",
    clean: str | os.PathLike | None = None,
    basis_labels: str | os.PathLike | None = None,
    export_basis: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    html: str | os.PathLike | None = None,
    render: Callable[[pd.DataFrame, Path], None] | None = None,
    config: SelfMLConfig | None = None,
    pretrain: Pretrain | None = None,
    min_count: int = 1,
    top: int = 3,
) -> Flipped:
    """Find and explain noisy multi-labels of a catalog with SELF-ML (paper 004): the job behind ``simlabel flip``.

    Each item's embedding ``x_i`` is reconstructed as a sparse convex combination ``c_i`` of a
    learnt basis ``X_B`` (:mod:`simlabel.labels.selfml`). With a clean set (strategy 2 of the
    paper) the basis vectors take the verified labels of their nearest clean images and the
    flipping model, an MLP on ``[y_i, Y_B c_i, x_i]``, is trained jointly with the classifier and
    the reconstruction (joint SELF-ML); its corrected labels ``f_i >= threshold`` replace the
    noisy ones of the other items. Without one (strategy 1), ``export_basis`` writes the images
    nearest the used basis vectors for an oracle to label, and ``basis_labels`` reads the answers
    and applies the direct rule ``Y_B c_i >= threshold``. Every flip is explained by the basis
    images with the largest coefficients in ``c_i`` and their labels.

    Parameters
    ----------
    emb : str, os.PathLike or Embeddings
        The images' embedding folder or loaded :class:`~simlabel.store.Embeddings`; catalog
        items without an embedding are left out.
    catalog : str, os.PathLike or Catalog
        The catalog (a file or folder, or a loaded :class:`~simlabel.catalog.Catalog`) holding
        the noisy labels.
    attributes : sequence of str, optional
        Columns whose values are the labels: one binary label ``attr=value`` per value of each
        column. ``None``: the labels are read from ``labels_col``.
    labels_col : str, default "labels"
        Without ``attributes``: the column of ``|``-separated labels (e.g.
        ``gender=Men|usage=Casual``).
    clean : str or os.PathLike, optional
        A CSV ``id,labels``: verified labels of a few items, which train the flipping model
        (joint SELF-ML; needs ``pretrain``). The other items are checked; ``export_basis`` and
        ``basis_labels`` are then ignored.
    basis_labels : str or os.PathLike, optional
        Without ``clean``: the file written by ``export_basis`` with its ``labels`` filled in
        (``id,labels,basis_index``); the direct rule flips with these basis labels.
    export_basis : str or os.PathLike, optional
        Without ``clean``: write the images nearest the used basis vectors there as a catalog to
        label (an image shared by several basis vectors is asked about once) and return without
        flipping (``out`` and ``html`` are not written).
    out : str or os.PathLike, optional
        Write the flips there (CSV) with ``<out>.summary.json``, the manifest of one output set
        that includes ``html``, under a lock on ``out``.
    html : str or os.PathLike, optional
        The explanation page, drawn by ``render``.
    render : callable, optional
        ``render(table, path)`` draws the page of the flips table at ``path``, e.g.
        :func:`simlabel.report.write_flip_html`; required with ``html`` (this job never renders
        HTML itself).
    config : SelfMLConfig, optional
        The method's settings; default ``SelfMLConfig()``.
    pretrain : callable, optional
        With ``clean``: ``pretrain(X, Y) -> torch.nn.Module``, the multi-label classifier
        pre-trained on the noisy rows (e.g. :func:`simlabel.training.multilabel_pretrain`).
    min_count : int, default 1
        With ``attributes``: labels with fewer positives are dropped.
    top : int, default 3
        The basis images kept to explain each flip (those with a non-zero coefficient).

    Returns
    -------
    Flipped
        ``labels``: the changed labels (``id, label, attribute, old, new, confidence, basis,
        weights, basis_labels``), written to ``out``; ``summary``; with ``export_basis``,
        ``basis_to_label``: the exported basis table (and no flips).

    Raises
    ------
    InputError
        No catalog id has an embedding; ``clean`` without ``pretrain``; neither ``clean`` nor
        ``export_basis`` nor ``basis_labels``; ``html`` without ``render``; ``top < 1``;
        embeddings with non-finite values; a clean set that leaves no item to check.
    LabelFileError
        A ``clean`` or ``basis_labels`` file that cannot be read, names an unknown label, or
        (``clean``) ids not in the catalog and embeddings; a ``basis_labels`` file without the
        ``basis_index`` column.
    CatalogError
        A catalog that cannot be read, or without the ``attributes`` or ``labels_col`` columns.
    StoreError
        ``emb`` is not a complete embedding folder.
    LockedError
        Another process is writing ``out``.

    Examples
    --------
    Strategy 1: export the basis, have it labelled, then flip with the direct rule.

    >>> from simlabel import flip
    >>> flip("emb/", "catalog.csv", attributes=["gender", "usage"], export_basis="basis.csv")  # doctest: +SKIP
    >>> made = flip("emb/", "catalog.csv", attributes=["gender", "usage"], basis_labels="basis.csv",
    ...             out="flips.csv")  # doctest: +SKIP
    >>> made.labels.head()  # doctest: +SKIP
    """
    config = config or SelfMLConfig()
    # conflicting or incomplete asks fail before any training, not after it
    if html is not None and render is None:
        raise InputError("`html` needs `render` (a function drawing the page, e.g. simlabel.report.write_flip_html)")
    if clean is not None and (export_basis is not None or basis_labels is not None):
        raise InputError("give `clean` (strategy 2) or `export_basis` / `basis_labels` (strategy 1), not both")
    if export_basis is not None and (out is not None or html is not None or basis_labels is not None):
        raise InputError("`export_basis` writes the basis images to label and flips nothing: run it without "
                         "`out`, `html` and `basis_labels`, then again with `basis_labels`")
    if clean is not None and pretrain is None:
        raise InputError("a clean set needs the classifier's pre-training: pass `pretrain` "
                         "(simlabel.training.multilabel_pretrain(config) makes one)")
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog, require=("id",))
    ml = from_attributes(cat.table, attributes, min_count=min_count) if attributes else from_labels_column(cat.table, labels_col)
    embeddings = as_embeddings(emb)
    keep = embeddings.has(ml.ids)
    ids, Y = ml.ids[keep], ml.Y[keep]
    if len(ids) == 0:
        raise InputError(f"none of the catalog's ids has an embedding in {embeddings.source}")
    X = embeddings.rows(ids).matrix

    if clean is not None:
        c_ids, Y_clean, _ = read_multilabel_file(clean, ml.labels, what="clean set")
        c_pos = pd.Index(ids).get_indexer(c_ids)
        if (c_pos < 0).any():
            raise LabelFileError(f"{clean}: {int((c_pos < 0).sum())} id(s) not in the catalog/embeddings, e.g. {c_ids[c_pos < 0][0]}")
        is_clean = np.zeros(len(ids), bool)
        is_clean[c_pos] = True
        noisy = np.flatnonzero(~is_clean)
        result = fit_selfml(X[noisy], Y[noisy], X[c_pos], Y[c_pos], Y_clean, config, classifier=pretrain(X[noisy], Y[noisy]))
        Y_new, probs = correct_labels(result, X[noisy], Y[noisy])
        C = coefficients(result.reconstruction, X[noisy])
        Y_B = result.Y_B
        basis_ids = ids[c_pos][result.basis_source]
        rows, Y_old = noisy, Y[noisy]
    else:
        rec = fit_reconstruction(X, config)
        C = coefficients(rec, X)
        used = used_basis(C)
        query = basis_query(basis_vectors(rec), X, used)
        if export_basis is not None:
            # two basis vectors can share their nearest image: ask about each image once
            groups = pd.Series(used).groupby(query).agg(lambda v: ";".join(map(str, v)))
            table = cat.table.set_index("id").loc[ids[groups.index.to_numpy()]].reset_index()
            cols = ["id"] + [c for c in ("image", "title") if c in table.columns]
            exported = table[cols].assign(basis_index=groups.to_numpy(), labels="")
            atomic_write_text(export_basis, exported.to_csv(index=False))
            summary = {"mode": "export", "n_items": int(len(ids)), "n_labels": int(len(ml.labels)),
                       "basis_used": int(len(used)), "basis_images": int(len(exported)),
                       "export_basis": str(export_basis)}
            return Flipped(pd.DataFrame(columns=FLIP_COLUMNS), summary, exported)
        if basis_labels is None:
            raise InputError("without a clean set (`clean`), give `export_basis` to get basis images to label, "
                             "then `basis_labels` with the answers")
        _, Yb, b = read_multilabel_file(basis_labels, ml.labels, what="basis label file")
        if "basis_index" not in b.columns:
            raise LabelFileError(f"{basis_labels}: needs the basis_index column written by `export_basis`")
        Y_B = np.zeros((C.shape[1], len(ml.labels)), np.uint8)
        for r, cell in enumerate(b["basis_index"]):
            Y_B[[int(v) for v in str(cell).split(";") if v.strip()]] = Yb[r]
        Y_new, probs = direct_rule(C, Y_B, config.threshold)
        basis_ids = np.full(C.shape[1], "", dtype=object)
        basis_ids[used] = ids[query]
        rows, Y_old = np.arange(len(ids)), Y
    explanations = explain_flips(C, Y_old, Y_new, probs, Y_B, top=top)
    table = pd.DataFrame(
        [
            {
                "id": ids[rows[e.row]],
                "label": ml.labels[e.label],
                "attribute": ml.attribute_of[e.label],
                "old": e.old,
                "new": e.new,
                "confidence": round(float(e.confidence), 4),
                "basis": ";".join(str(basis_ids[b]) for b in e.basis),
                "weights": ";".join(f"{w:.3f}" for w in e.weights),
                "basis_labels": ";".join(str(v) for v in e.basis_labels),
            }
            for e in explanations
        ],
        columns=FLIP_COLUMNS,
    )
    summary = {
        "mode": "joint" if clean is not None else "direct",
        "n_items": int(len(ids)),
        "n_checked": int(len(rows)),
        "n_labels": int(len(ml.labels)),
        "flips": int(len(table)),
        "added": int((table["new"] == 1).sum()) if len(table) else 0,
        "removed": int((table["new"] == 0).sum()) if len(table) else 0,
        "by_attribute": {str(a): int(n) for a, n in table["attribute"].value_counts().sort_index().items()},
        "embeddings_fingerprint": embeddings.fingerprint,
        "html": str(html) if html else None,
    }
    if out is not None:
        out = Path(out)
        members = {out: lambda tmp: tmp.write_text(labels_csv(table), encoding="utf-8")}
        if html is not None:
            members[Path(html)] = lambda tmp: render(table, tmp)
        with exclusive(out):
            write_set(out.with_name(out.name + ".summary.json"), members, summary)
    elif html is not None:
        render(table, Path(html))
    return Flipped(table, summary, classifier=result.classifier if clean is not None else None,
                   label_names=list(ml.labels), embeddings_meta={**embeddings.meta, "space": embeddings.space, "source": _source_name(emb)})


def _source_name(emb) -> str:
    return str(emb) if isinstance(emb, (str, os.PathLike)) else str(getattr(emb, "source", "Embeddings"))
