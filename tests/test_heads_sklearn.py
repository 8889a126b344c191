"""The heads are scikit-learn estimators: clone, cross_val_score, Pipeline and scikit-learn's own checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from simlabel.errors import InputError
from simlabel.heads import EmbeddingClassifier, HeadConfig, MultiLabelClassifier, MultiLabelHeadConfig
from tests.helpers import blobs

FAST = HeadConfig(head="linear", max_epochs=40, patience=5, device="cpu", seed=0)

#: scikit-learn checks that do not apply, and why (every other check of ``check_estimator`` must pass)
NOT_APPLICABLE = {
    # a sample weight scales its row's loss; a row weighted 2 is not that row twice for a head trained by
    # mini-batch AdamW with early stopping on a validation split drawn from the rows (the batches and the split
    # differ), so the two fits agree in their predictions, not to 1e-7 in their probabilities
    "check_sample_weight_equivalence_on_dense_data": "weights scale the loss; a repeated row changes the batches and the split",
}


def test_clone_gives_an_unfitted_copy_with_the_same_parameters() -> None:
    X, y = blobs(30, ["a", "b", "c"])
    clf = EmbeddingClassifier(FAST, progress_label="mine").fit(X, y)
    twin = clone(clf)
    assert twin.get_params() == {"config": FAST, "progress_label": "mine"}
    assert not hasattr(twin, "module_") and hasattr(clf, "module_")
    assert np.array_equal(twin.fit(X, y).predict_proba(X), clf.predict_proba(X))  # seeded: the same head again
    clf.set_params(config=HeadConfig(head="mlp", max_epochs=5, device="cpu"))
    assert clf.get_params()["config"].head == "mlp"


def test_cross_val_score_and_a_pipeline() -> None:
    X, y = blobs(40, ["a", "b", "c"])
    scores = cross_val_score(EmbeddingClassifier(FAST), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9  # well-separated blobs
    pipe = Pipeline([("norm", Normalizer()), ("head", EmbeddingClassifier(FAST))]).fit(X * 7.0, y)
    assert (pipe.predict(X * 7.0) == y).mean() > 0.9
    assert list(pipe.classes_) == ["a", "b", "c"] and pipe.score(X * 7.0, y) > 0.9
    proba = cross_val_score(EmbeddingClassifier(FAST), X, y, cv=3, scoring="neg_log_loss")
    assert np.all(proba < 0)


def test_a_validation_set_in_the_labels_own_type() -> None:
    """Integer labels with X_val / y_val: the validation labels are coded like the training ones (a KeyError before)."""
    X_all, y_all = blobs(40, [0, 1, 2])
    val = np.arange(len(y_all)) % 4 == 0
    X, y, Xv, yv = X_all[~val], y_all[~val], X_all[val], y_all[val]
    clf = EmbeddingClassifier(FAST).fit(X, y, X_val=Xv, y_val=yv)
    assert list(clf.classes_) == [0, 1, 2] and (clf.predict(Xv) == yv).mean() > 0.9
    with pytest.raises(InputError, match=r"validation labels not in classes: \['7'\]"):
        EmbeddingClassifier(FAST).fit(X, y, X_val=Xv[:1], y_val=[7])


def test_multilabel_head_clones_and_scores() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0], axis=1).astype(np.uint8)
    clf = MultiLabelClassifier(MultiLabelHeadConfig(epochs=60, lr=0.05, seed=0))
    assert clone(clf).get_params() == clf.get_params()
    fitted = clf.fit(X, Y)
    assert fitted.predict(X).shape == Y.shape and list(fitted.classes_) == [0, 1, 2]
    assert (fitted.predict(X) == Y).mean() > 0.9
    scores = cross_val_score(MultiLabelClassifier(MultiLabelHeadConfig(epochs=60, lr=0.05, seed=0)), X, Y, cv=3,
                             scoring="f1_micro")
    assert scores.min() > 0.8


def test_scikit_learns_own_checks() -> None:
    """``check_estimator`` on the single-label head (62 checks, about 5 s). The multi-label head is not run
    through it: its generic checks feed 1-D single-label targets, which a head of independent 0/1 labels does
    not take (it refuses them, naming the shape); its scikit-learn behaviour is tested above."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(EmbeddingClassifier(FAST), on_fail=None)
    assert len(results) > 50  # the checks ran
    failed = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}
    unexpected = {name: why for name, why in failed.items() if name not in NOT_APPLICABLE}
    assert not unexpected, unexpected
    assert sum(r["status"] == "passed" for r in results) >= len(results) - len(NOT_APPLICABLE) - 2  # 2: skips


def test_the_heads_refuse_what_they_cannot_use() -> None:
    from sklearn.exceptions import NotFittedError

    X, y = blobs(20, ["a", "b"])
    with pytest.raises(NotFittedError):
        MultiLabelClassifier().predict_proba(X)
    with pytest.raises(ValueError, match="NaN"):
        EmbeddingClassifier(FAST).fit(np.where(np.eye(40, 16) > 0, np.nan, X), y)
    with pytest.raises(ValueError, match="Y must be 2-D"):
        MultiLabelClassifier().fit(X, y)
    clf = EmbeddingClassifier(FAST).fit(X, y)
    with pytest.raises(ValueError, match="16 features"):
        clf.predict(X[:, :8])  # the width it was fitted on is checked
    assert clf.n_features_in_ == 16 and clf.predict(X).dtype.kind == "U"  # the labels' own type comes back
