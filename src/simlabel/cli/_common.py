"""What every command shares: the consoles, the one error handler, option helpers."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rich.table
import typer
from rich.console import Console
from rich.text import Text

from simlabel.context import modes
from simlabel.errors import SimlabelError, SimlabelWarning
from simlabel.progress import progress_mode

console = Console(stderr=True)
out_console = Console()

F = TypeVar("F", bound=Callable[..., Any])


# Every message, table cell and progress text printed here may carry user data (ids, paths, column names,
# labels): it is printed as rich Text, never parsed as markup, so "price[eur]" or "title[/x]" prints as written,
# and a control character prints as its escape (\x1b), never reaching the terminal as a control sequence.


def printable(text: object) -> Text:
    """``text`` as rich Text: no markup, control characters (a tab too, which a terminal would widen into
    spaces; not a newline) shown as ``\\xNN`` escapes."""
    import unicodedata

    s = str(text)
    if any(unicodedata.category(c) == "Cc" and c != "\n" for c in s):
        s = "".join(c if c == "\n" or unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in s)
    return Text(s)


def as_flags(message: object, flags: dict[str, str] | None = None) -> str:
    """A library message as the command line says it: the library names a parameter in backticks (`text_col`),
    and a parameter of the running command is its flag here (--text-col; ``flags``: :func:`option_flags`).
    Other backticked text (a command to run, a parameter this command does not have) is left as it is."""
    import re

    text = str(message)
    if not flags or "`" not in text:
        return text
    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", lambda m: flags.get(m.group(1), m.group(0)), text)


def option_flags(fn: Callable[..., Any]) -> dict[str, str]:
    """``{parameter: --flag}`` of a command function's typer options (the longest declared name, or typer's own
    ``--parameter-name``)."""
    import inspect

    from typer.models import OptionInfo

    flags = {}
    for name, param in inspect.signature(fn).parameters.items():
        info = param.default
        if isinstance(info, OptionInfo):
            decls = [d.split("/")[0] for d in (info.param_decls or ()) if d.startswith("--")]
            flags[name] = max(decls, key=len) if decls else "--" + name.replace("_", "-")
    return flags


def fail(message: str, code: int = 1, flags: dict[str, str] | None = None) -> None:
    """Print ``error: message`` on stderr (parameters named as ``flags``) and exit with ``code``."""
    console.print(Text.assemble(("error:", "bold red"), " ", printable(as_flags(message, flags))), highlight=False,
                  soft_wrap=True)
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None, flags: dict[str, str] | None = None) -> None:
    console.print(Text.assemble(("warning:", "bold yellow"), " ", printable(as_flags(message, flags))), highlight=False,
                  soft_wrap=True)


class Table(rich.table.Table):
    """A rich table whose title and string cells print as text (user data), not markup."""

    def __init__(self, *args: Any, title: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, title=printable(title) if isinstance(title, str) else title, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(printable(c) if isinstance(c, str) else c for c in cells), **kwargs)


def handle_errors(fn: F) -> F:
    """simlabel's own errors and OS errors become one line and exit 1; anything else is a bug
    and keeps its traceback. Warnings print as one ``warning:`` line. A command's ``wait``,
    ``allow_partial`` and ``normalize_labels`` options switch the run's :func:`modes`; its
    ``progress`` option (``--no-progress``) turns bars into one line per finished unit."""

    flags = option_flags(fn)  # the library names parameters; this command prints them as its flags

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        switches = {k: kwargs[k] for k in ("wait", "allow_partial", "normalize_labels") if k in kwargs}
        shown = "auto" if kwargs.get("progress", True) else "lines"
        with warnings.catch_warnings(), modes(**switches), progress_mode(shown):
            warnings.showwarning = functools.partial(_show_warning, flags=flags)
            warnings.simplefilter("default", SimlabelWarning)
            try:
                return fn(*args, **kwargs)
            except (SimlabelError, OSError) as e:
                fail(str(e), flags=flags)

    return wrapper  # type: ignore[return-value]


def progress_option() -> Any:
    return typer.Option(True, "--progress/--no-progress",
                        help="Progress bars on a terminal; --no-progress (and any output that is not a terminal) "
                             "prints one plain line per finished unit instead.")


def wait_option() -> Any:
    return typer.Option(False, "--wait", help="When another simlabel process is writing the same output, wait for it instead of failing.")


def partial_option() -> Any:
    return typer.Option(False, "--allow-partial", help="Read an embedding store whose embed job has not finished (what is there).")


def normalize_option() -> Any:
    return typer.Option(False, "--normalize-labels", help="Fold label spellings that differ only in case or spaces (dress, DRESS, 'dress ') into the most frequent one.")


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """``@app.command()`` with the error handler."""

    def register(fn: F) -> F:
        app.command(name, **kwargs)(handle_errors(fn))
        return fn

    return register


def comma_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None -> ``[]``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (so options never copy a default)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")


def say(message: str) -> None:
    """Print a line on stdout, unstyled and as text (never markup)."""
    out_console.print(printable(message), highlight=False, soft_wrap=True)


def log(message: str) -> None:
    """Print a progress line on stderr, unstyled and as text (never markup)."""
    console.print(printable(message), highlight=False, soft_wrap=True)


def columns(**mapping: str | None) -> dict[str, str]:
    """Catalog column mapping from ``--X-col`` options, the unset ones left out."""
    return {k: v for k, v in mapping.items() if v}


def graph_option(what: str = "the neighbours") -> Any:
    return typer.Option(None, "--graph", help=f"Read {what} from a k-NN graph built by `simlabel graph` over EMB (its k must "
                                              "be at least the neighbours asked for) instead of querying.")


def index_option() -> Any:
    return typer.Option(None, "--index", help="Or search a saved index built by `simlabel index` over EMB (when no --graph).")


INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


def index_kind_option(value: str = "auto") -> Any:
    return typer.Option(value, "--index-kind", help="With neither --graph nor --index, the index built: auto (exact up to "
                                                    "200k rows, IVF above), flat, ivf or hnsw.")


def index_or_kind(index: str | None, index_kind: str) -> tuple[str | None, str]:
    """``--index`` names a saved index; before every command read it that way, side-info's
    ``--index`` was the kind to build. A kind name that is not a file still means that, with a
    warning, so older scripts keep running."""
    if index in INDEX_KINDS and not Path(index).exists():
        log(f"warning: --index {index} names an index kind; write --index-kind {index} (--index is a saved index)")
        return None, index
    return index, index_kind


def device_option() -> Any:
    return typer.Option("auto", "--device", help="cpu, cuda, or auto (cuda when present).")


def written(*paths: Any) -> None:
    """``written: PATH`` for each path that is set."""
    for p in paths:
        if p:
            say(f"written: {p}")


def param_default(fn: Callable[..., Any], name: str) -> Any:
    """The default of parameter ``name`` of function ``fn``."""
    import inspect

    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise KeyError(f"{fn.__name__} has no default for {name!r}")
    return value
