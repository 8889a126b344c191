"""Progress: nested bars on a terminal, one line per finished unit elsewhere, nothing when off."""

from __future__ import annotations

import pytest

from simlabel import progress
from simlabel.progress import progress_mode, task


def test_lines_mode_prints_the_first_and_last_unit_and_throttles(capsys, monkeypatch) -> None:
    clock = iter(range(0, 1000))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)) * 0.1)  # 0.1 s a tick
    with progress_mode("lines"), task("train", 50, unit="epochs") as t:
        for _ in range(50):
            t.advance(1, loss="0.1")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("train: 1/50 epochs") and "[loss 0.1]" in lines[0]
    assert lines[-1].startswith("train: 50/50 epochs") and "eta" not in lines[-1]
    # one line at most every LINE_INTERVAL seconds, the first and last always
    assert 2 < len(lines) < 50


def test_nested_tasks_name_their_path_and_early_stops_say_so(capsys) -> None:
    with progress_mode("lines"), task("experiment smoothing", 2, unit="models") as outer:
        with task("semantic image seed 0", 100, unit="epochs") as inner:
            for _ in range(3):
                inner.advance(1)
            inner.finish("early stop, best epoch 1")
        outer.advance(1)
    err = capsys.readouterr().err
    assert "experiment smoothing > semantic image seed 0: 3/100 epochs" in err
    assert "early stop, best epoch 1" in err
    assert err.strip().splitlines()[-1].startswith("experiment smoothing: 1/2 models")


def test_off_and_disabled_print_nothing(capsys) -> None:
    with progress_mode("off"), task("a", 3) as t:
        t.advance(3)
    with progress_mode("lines"), task("b", 3, enabled=False) as t:
        with task("inner", 2) as inner:  # a silenced task silences what it opens
            inner.advance(2)
        t.advance(3)
    assert capsys.readouterr().err == ""


def test_bars_mode_draws_without_error(capsys) -> None:
    with progress_mode("bars"), task("outer", 2) as outer:
        with task("inner", 4, unit="steps") as inner:
            inner.advance(4, loss="1.0")
        outer.advance(2)
    assert "outer" in capsys.readouterr().err


def test_auto_is_lines_when_stderr_is_not_a_terminal(capsys) -> None:
    assert progress.current_mode() == "lines"  # pytest captures stderr


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="progress mode"):
        with progress_mode("loud"):
            pass
