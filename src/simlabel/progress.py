"""Progress of long jobs: nested rich bars on a terminal, one line per finished unit elsewhere.

Every job that can run longer than a few seconds reports through :func:`task`::

    with task("train", total=cfg.max_epochs, unit="epochs") as t:
        for epoch in ...:
            ...
            t.advance(1, loss=f"{loss:.3f}")
        t.finish("early stop")           # a job that ends before its total says why

Tasks opened inside a task nest (experiment -> repetition -> model -> epoch). How they show
is the run's *mode*, a context variable (threads and async tasks see the value of the context
they started in) set for a block with :func:`progress_mode`:

* ``auto`` (default): ``bars`` when stderr is a terminal, ``lines`` otherwise;
* ``bars``: rich progress bars, one row per open task, indented by depth; a finished inner
  task's row is removed, the outermost one stays;
* ``lines``: plain lines on stderr, one per finished unit (``train > epochs: 12/200 ...``),
  at most one every :data:`LINE_INTERVAL` seconds per task, the first and the last always;
* ``off``: nothing.

The command line's ``--no-progress`` selects ``lines``; ``enabled=False`` silences one task
(and what it opens).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LINE_INTERVAL", "MODES", "Task", "progress_bar", "progress_mode", "task"]

MODES = ("auto", "bars", "lines", "off")
#: seconds between two lines of one task in ``lines`` mode
LINE_INTERVAL = 2.0

_MODE: contextvars.ContextVar[str] = contextvars.ContextVar("simlabel_progress_mode", default="auto")
#: the open tasks, outermost first, and the display they share
_STACK: contextvars.ContextVar[tuple] = contextvars.ContextVar("simlabel_progress_stack", default=())


@contextlib.contextmanager
def progress_mode(mode: str) -> Iterator[None]:
    """Show progress as ``mode`` (one of :data:`MODES`) inside the block."""
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}; got {mode!r}")
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def current_mode() -> str:
    """The mode in effect, with ``auto`` resolved against stderr."""
    mode = _MODE.get()
    if mode == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "bars" if isatty is not None and isatty() else "lines"
    return mode


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate(done: float, elapsed: float) -> float:
    return done / elapsed if elapsed > 0 else 0.0


@dataclass
class Task:
    """One open unit of work: ``advance`` it as units finish; ``finish`` ends it early."""

    description: str
    total: int | None
    unit: str
    mode: str
    path: str
    completed: int = 0
    start_completed: int = 0
    started: float = field(default_factory=time.perf_counter)
    info: dict[str, Any] = field(default_factory=dict)
    _display: Any = None
    _row: Any = None
    _last_line: float = -math.inf
    _stopped: bool = False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def rate(self) -> float:
        """Units per second since the task started (resumed units not counted)."""
        return _rate(self.completed - self.start_completed, self.elapsed)

    def eta(self) -> float:
        if self.total is None:
            return math.nan
        rate = self.rate()
        left = max(self.total - self.completed, 0)
        return left / rate if rate > 0 else (0.0 if left == 0 else math.nan)

    def advance(self, n: int = 1, **info: Any) -> None:
        """``n`` more units finished; ``info`` (e.g. ``loss="0.41"``) shows beside the bar."""
        self.completed += n
        self.info.update(info)
        if self.mode == "bars" and self._display is not None:
            self._display.update(self._row, completed=self.completed, info=self._info_text())
        elif self.mode == "lines" and n:
            now = time.perf_counter()
            last = self.total is not None and self.completed >= self.total
            if last or now - self._last_line >= LINE_INTERVAL:
                self._line()
                self._last_line = now

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self.mode == "bars" and self._display is not None:
            self._display.update(self._row, total=total)

    def finish(self, note: str = "") -> None:
        """End before the total (early stopping): a last line saying so."""
        if self.total is not None and self.completed >= self.total:
            return
        self._stopped = True
        if note:
            self.info["stopped"] = note
        if self.mode == "lines":
            self._line()
            self._last_line = time.perf_counter()
        elif self.mode == "bars" and self._display is not None:
            self._display.update(self._row, total=self.completed, info=self._info_text())

    def _info_text(self) -> str:
        return ", ".join(f"{k} {v}" if k != "stopped" else str(v) for k, v in self.info.items())

    def _line(self) -> None:
        total = "" if self.total is None else f"/{self.total:,}"
        running = self.total is not None and self.completed < self.total and not self._stopped
        eta = f", eta {_duration(self.eta())}" if running else ""
        info = f" [{self._info_text()}]" if self.info else ""
        print(
            f"{self.path}: {self.completed:,}{total} {self.unit}, {self.rate():,.1f} {self.unit}/s, "
            f"{_duration(self.elapsed)} elapsed{eta}{info}",
            file=sys.stderr,
            flush=True,
        )


def _make_display() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Units per second over the whole task (steadier than rich's windowed speed)."""

        def render(self, row) -> Text:
            done = row.completed - row.fields.get("start_completed", 0)
            rate = _rate(done, row.elapsed or 0.0)
            return Text(f"{rate:,.1f} {row.fields.get('unit', 'items')}/s", style="progress.data.speed")

    return Progress(
        # descriptions and info carry user data (paths, column names): printed as text, never parsed as markup
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        transient=False,
        console=Console(stderr=True),  # stdout stays for results (`--json -`, tables)
    )


@contextlib.contextmanager
def task(description: str, total: int | None = None, *, unit: str = "items", completed: int = 0,
         enabled: bool = True) -> Iterator[Task]:
    """Open a task of ``total`` units (None: unknown) for the block; see the module docstring."""
    stack = _STACK.get()
    parent = stack[-1] if stack else None
    mode = current_mode() if enabled else "off"
    if parent is not None and parent.mode == "off":
        mode = "off"  # a silenced task silences what it opens
    path = f"{parent.path} > {description}" if parent is not None else description
    t = Task(description, total, unit, mode, path, completed=completed, start_completed=completed)
    owner = False
    if mode == "bars":
        display = parent._display if parent is not None and parent._display is not None else None
        if display is None:
            display, owner = _make_display(), True
            display.start()
        t._display = display
        t._row = display.add_task("  " * len(stack) + description, total=total, completed=completed,
                                  start_completed=completed, unit=unit, info="")
    token = _STACK.set((*stack, t))
    try:
        yield t
    finally:
        _STACK.reset(token)
        if t._display is not None:
            if owner:
                t._display.stop()
            else:
                t._display.remove_task(t._row)


@contextlib.contextmanager
def progress_bar(description: str, total: int, *, completed: int = 0, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A task yielding its ``advance(n)`` only (what ``embed`` and ``search`` use)."""
    with task(description, total, completed=completed, enabled=enabled) as t:
        yield t.advance
