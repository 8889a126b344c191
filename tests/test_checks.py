"""The declarative config checks and the error base."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlabel.checks import in_range, one_of, positive_int
from simlabel.errors import (
    CatalogError,
    ConfigError,
    DataNotFound,
    EmbedItemError,
    LabelFileError,
    MissingIdsError,
    SimlabelError,
    StoreError,
)


def test_every_error_keeps_its_old_base_and_is_a_simlabel_error() -> None:
    for cls, base in ((CatalogError, ValueError), (StoreError, ValueError), (LabelFileError, ValueError),
                      (ConfigError, ValueError), (DataNotFound, FileNotFoundError), (EmbedItemError, RuntimeError),
                      (MissingIdsError, KeyError)):
        assert issubclass(cls, SimlabelError) and issubclass(cls, base), cls


def test_missing_ids_error_lists_five_and_counts_the_rest() -> None:
    e = MissingIdsError([f"x{i}" for i in range(8)], "emb/")
    assert str(e) == "emb/: 8 id(s) not in it: 'x0', 'x1', 'x2', 'x3', 'x4' and 3 more"


def test_checks_by_hand() -> None:
    assert one_of("a", ("a", "b"), "kind") == "a"
    with pytest.raises(ConfigError, match=r"kind must be one of a, b; got 'c'"):
        one_of("c", ("a", "b"), "kind")
    assert positive_int(3, "k") == 3 and positive_int(0, "k", minimum=0) == 0 and positive_int(None, "k", allow_none=True) is None
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ConfigError, match="k must be a positive integer"):
            positive_int(bad, "k")
    assert in_range(0.5, "alpha", 0, 1) == 0.5 and in_range(1, "alpha", 0, 1) == 1
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\); got 1"):
        in_range(1, "alpha", 0, 1, hi_open=True)
    with pytest.raises(ConfigError, match=r"lr must be in \(0, inf\]; got 0"):
        in_range(0, "lr", 0, lo_open=True)
    with pytest.raises(ConfigError, match="must be a number"):
        in_range(math.nan, "x")


@given(st.floats(allow_nan=False), st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False))
def test_in_range_agrees_with_the_comparison(x: float, a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    if lo <= x <= hi:
        assert in_range(x, "x", lo, hi) == x
    else:
        with pytest.raises(ConfigError, match="x must be in"):
            in_range(x, "x", lo, hi)


def test_every_config_checks_its_fields() -> None:
    from simlabel.experiments.augment import AugmentExperimentConfig
    from simlabel.experiments.flipping import FlippingExperimentConfig
    from simlabel.experiments.side_info import SideInfoExperimentConfig
    from simlabel.experiments.smoothing import SmoothingExperimentConfig
    from simlabel.heads import HeadConfig, MultiLabelHeadConfig
    from simlabel.index import IndexConfig
    from simlabel.labels.search import SearchConfig
    from simlabel.labels.selfml import SelfMLConfig
    from simlabel.labels.side_info import SideInfoConfig
    from simlabel.labels.smoothing import SmoothingConfig

    cases = [(IndexConfig, {"kind": "lsh"}, "kind"), (HeadConfig, {"lr": 0}, "lr"), (MultiLabelHeadConfig, {"batch_size": 0}, "batch_size"),
             (SmoothingConfig, {"alpha": 2}, "alpha"), (SideInfoConfig, {"knn": 0}, "knn"), (SearchConfig, {"top_r": 0}, "top_r"),
             (SelfMLConfig, {"threshold": 2}, "threshold"), (AugmentExperimentConfig, {"k": 0}, "k"),
             (SmoothingExperimentConfig, {"approaches": ["bogus"]}, "approach"), (FlippingExperimentConfig, {"n_clean": 0}, "n_clean"),
             (SideInfoExperimentConfig, {"methods": ["bogus"]}, "method")]
    for cls, kwargs, field in cases:
        with pytest.raises(ConfigError, match=field):
            cls(**kwargs)
