"""simlabel.sources: image bytes from http(s):// and fsspec URLs, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simlabel import embed, load_embeddings
from simlabel.errors import ConfigError
from simlabel.remote import redact
from simlabel.sources import FetchConfig, Fetcher, FetchError, _retry_after
from tests.helpers import slice_catalog
from tests.servers import ImageServer

FAST = dict(timeout=1.0, retries=2, backoff=0.05, max_backoff=0.2, max_bytes=1 << 20)


@pytest.fixture
def images(tmp_path: Path) -> pd.DataFrame:
    """12 real clothing-small photos (absolute paths) and a text file named like an image."""
    df = slice_catalog("clothing-small", 12, tmp_path, stratify="label")
    (tmp_path / "notes.jpg").write_text("these are notes, not a photo")
    return df


def test_fetch_returns_the_file_bytes_and_each_fault_its_reason(images: pd.DataFrame, tmp_path: Path) -> None:
    name = images["image"].iloc[0]
    with ImageServer(tmp_path, slow_seconds=3) as srv, Fetcher(FetchConfig(**FAST)) as f:
        assert f.fetch(f"{srv.url}/img/{name}") == Path(name).read_bytes()
        expected = {"404": "http-404", "403": "http-403", "500": "http-500", "slow": "timeout", "big": "too-large",
                    "loop": "redirects"}
        for kind, reason in expected.items():
            with pytest.raises(FetchError) as e:
                f.fetch(f"{srv.url}/{kind}/{name}")
            assert e.value.reason == reason, kind
        # a 500 is retried (2 retries: 3 requests), a 404 is not
        assert srv.requests[f"/500/{name}"] == 3 and srv.requests[f"/404/{name}"] == 1
        with pytest.raises(FetchError) as e:
            f.fetch("http://no-such-host.invalid/a.jpg")
        assert e.value.reason == "dns"


def test_retry_after_is_honoured(images: pd.DataFrame, tmp_path: Path) -> None:
    """A 429 with Retry-After: 1 is fetched on the second try, after at least that second (the backoff is 0.05 s)."""
    name = images["image"].iloc[1]
    with ImageServer(tmp_path) as srv, Fetcher(FetchConfig(**FAST)) as f:
        t = time.perf_counter()
        data = f.fetch(f"{srv.url}/429/{name}")
        waited = time.perf_counter() - t
    assert data == Path(name).read_bytes() and srv.requests[f"/429/{name}"] == 2
    assert waited >= 0.95 and f.stats["retries"] == 1


def test_retry_after_too_long_is_not_waited_for() -> None:
    assert _retry_after("7") == 7.0 and _retry_after(None) is None and _retry_after("soon") is None
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= _retry_after(when) <= 31


def test_fetch_cache_keeps_the_bytes(images: pd.DataFrame, tmp_path: Path) -> None:
    name = images["image"].iloc[2]
    cfg = FetchConfig(**FAST, cache_dir=str(tmp_path / "bytes"))
    with ImageServer(tmp_path) as srv:
        url = f"{srv.url}/img/{name}"
        with Fetcher(cfg) as f:
            first = f.fetch(url)
        with Fetcher(cfg) as f:
            again = f.fetch(url)
            assert f.stats["from_cache"] == 1
    assert first == again == Path(name).read_bytes() and srv.requests[f"/img/{name}"] == 1


def test_fetch_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        FetchConfig(concurrency=0)
    with pytest.raises(ConfigError, match="timeout"):
        FetchConfig(timeout=0)


@given(user=st.text("xyz", min_size=1, max_size=6), secret=st.text("0123456789", min_size=4, max_size=12),
       path=st.text("abc/._-", max_size=12))
def test_redact_never_keeps_credentials(user: str, secret: str, path: str) -> None:
    url = f"https://{user}:{secret}@cdn.example.com:8443/{path}?X-Amz-Signature={secret}&token={secret}#{secret}"
    shown = redact(url)
    assert secret not in shown and f"{user}:" not in shown
    assert shown.startswith("https://cdn.example.com:8443/")


@pytest.mark.slow
def test_embed_from_urls_equals_embed_from_paths_and_records_every_fault(images: pd.DataFrame, image_encoder,
                                                                          tmp_path: Path) -> None:
    """The issue's end-to-end case: URL embeddings equal the paths' to 1e-6; each planted fault is in errors.csv
    with its reason (and no signature), every other item is embedded; --retry-failed fetches the failed again."""
    images.to_csv(tmp_path / "local.csv", index=False)
    first = images["image"].iloc[0]
    with ImageServer(tmp_path, slow_seconds=3) as srv:
        urls = images.assign(image=[f"{srv.url}/img/{p}" for p in images["image"]])
        # a signed URL: the query must never be written
        urls.loc[0, "image"] = f"{srv.url}/sig/{first}?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"
        faults = {"404": "http-404", "403": "http-403", "500": "http-500", "slow": "timeout", "big": "too-large",
                  "loop": "redirects"}
        planted = pd.DataFrame({"id": [f"bad-{k}" for k in faults] + ["bad-text", "bad-sig"],
                                "image": [f"{srv.url}/{k}/{first}" for k in faults] + [f"{srv.url}/img/notes.jpg",
                                          f"{srv.url}/404/{first}?token=s3cr3t"],
                                "label": "x"})
        pd.concat([urls, planted]).to_csv(tmp_path / "urls.csv", index=False)
        by_path = embed(tmp_path / "local.csv", tmp_path / "e-path", image_encoder=image_encoder, progress=False, cache=False)
        by_url = embed(tmp_path / "urls.csv", tmp_path / "e-url", image_encoder=image_encoder, progress=False, cache=False,
                       fetch=FetchConfig(**FAST))
        assert by_path.n_embedded == 12 and by_url.n_embedded == 12 and by_url.n_failed == 8
        a, b = load_embeddings(tmp_path / "e-path"), load_embeddings(tmp_path / "e-url")
        np.testing.assert_allclose(b.rows(a.ids).matrix, a.matrix, atol=1e-6)
        errors = pd.read_csv(tmp_path / "e-url" / "errors.csv").set_index("id")
        assert errors["reason"].to_dict() == {**{f"bad-{k}": r for k, r in faults.items()}, "bad-text": "not-an-image",
                                              "bad-sig": "http-404"}
        written = "".join(p.read_text() for p in (tmp_path / "e-url").rglob("*") if p.suffix in (".csv", ".json"))
        assert "s3cr3t" not in written and "AKIA" not in written
        # --retry-failed asks again (the server still fails them)
        before = srv.requests[f"/500/{first}"]
        again = embed(tmp_path / "urls.csv", tmp_path / "e-url", image_encoder=image_encoder, progress=False, cache=False,
                      fetch=FetchConfig(**FAST), retry_failed=True)
        assert srv.requests[f"/500/{first}"] > before, "--retry-failed fetched the failed again"
        assert again.n_failed == 8


@pytest.mark.slow
def test_embed_through_a_failing_server_embeds_every_item_once(images: pd.DataFrame, image_encoder, tmp_path: Path) -> None:
    """20% of the requests answered 503: every item is embedded once, with retries; the vectors equal the paths'."""
    with ImageServer(tmp_path, fail_rate=0.2, seed=3) as srv:
        urls = images.assign(image=[f"{srv.url}/flaky/{p}" for p in images["image"]])
        urls.to_csv(tmp_path / "flaky.csv", index=False)
        res = embed(tmp_path / "flaky.csv", tmp_path / "e", image_encoder=image_encoder, progress=False, cache=False,
                    fetch=FetchConfig(timeout=5.0, retries=8, backoff=0.01, max_backoff=0.05))
        assert srv.served == 12, "each image body was sent once"
        assert sum(srv.requests.values()) > 12, "the 503s were retried"
    assert res.n_embedded == 12 and res.n_failed == 0
    emb = load_embeddings(tmp_path / "e")
    assert len(set(emb.ids)) == 12
