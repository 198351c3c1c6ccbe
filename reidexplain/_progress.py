"""Progress bars that draw on a terminal and stay quiet in files and CI logs.

:func:`progress_bar` returns a ``tqdm`` bar when the output stream is a terminal. Anywhere else (a log
file, a pipe, a CI job, a notebook's captured stream) a carriage-return bar would write one line per
update, so it returns a :class:`PlainProgress` instead, which writes at most a handful of plain lines:
one when the work starts, one per quarter of a known total, and a summary with the elapsed time and the
last postfix when it is closed.

Examples:
    >>> import io
    >>> out = io.StringIO()
    >>> for _ in progress_bar(range(8), desc="work", file=out):
    ...     pass
    >>> print(out.getvalue().strip().splitlines()[-1].split(" in ")[0])
    work: done, 8/8
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "PlainProgress", "is_terminal"]


def is_terminal(file: IO[str] | None) -> bool:
    """Whether ``file`` (default ``sys.stderr``) is an interactive terminal.

    Examples:
        >>> import io
        >>> is_terminal(io.StringIO())
        False
    """
    stream = sys.stderr if file is None else file
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


class PlainProgress:
    """The non-terminal progress bar: a few plain lines instead of one line per update.

    It has the part of tqdm's interface the library uses: iteration, ``update``, ``set_postfix``,
    ``set_description``, ``close`` and use as a context manager.

    Args:
        iterable: Iterated over by ``for x in bar``; ``None`` when the caller calls ``update``.
        total: Number of steps; default ``len(iterable)`` when it has one.
        desc: Prefix of every line.
        enabled: ``False`` writes nothing at all.
        file: Output stream (default ``sys.stderr``).
        milestones: Number of progress lines between the start and the summary (at equal fractions of
            a known total; none when the total is unknown).
        unit: Name of one step in the lines.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> with PlainProgress(total=4, desc="fit", file=out, milestones=1) as bar:
        ...     for _ in range(4):
        ...         bar.update(1)
        ...     bar.set_postfix(loss=0.5)
        >>> lines = out.getvalue().splitlines()
        >>> lines[0], lines[1], lines[2].split(" in ")[0]
        ('fit: started, 4 it', 'fit: 2/4 (50%)', 'fit: done, 4/4')
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: int | None = None,
        desc: str = "",
        enabled: bool = True,
        file: IO[str] | None = None,
        milestones: int = 3,
        unit: str = "it",
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.enabled = bool(enabled)
        self.file = file
        self.unit = unit
        self.n = 0
        self.postfix = ""
        self._started = time.perf_counter()
        self._closed = False
        self._marks = [] if not total else sorted(
            {max(1, round(total * (i + 1) / (milestones + 1))) for i in range(max(0, milestones))}
            - {total}
        )
        self._write(f"started, {total} {unit}" if total is not None else "started")

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        prefix = f"{self.desc}: " if self.desc else ""
        stream = sys.stderr if self.file is None else self.file
        stream.write(f"{prefix}{text}\n")
        stream.flush()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("PlainProgress: no iterable to iterate over; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("PlainProgress: the total is unknown")
        return self.total

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps; writes a line when a milestone is passed."""
        before = self.n
        self.n += n
        passed = [m for m in self._marks if before < m <= self.n]
        if passed and self.n < (self.total or 0):
            pct = 100.0 * self.n / self.total  # type: ignore[operator]
            self._write(f"{self.n}/{self.total} ({pct:.0f}%){self._postfix_text()}")

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        """Remember ``key=value`` pairs, shown on the next line written."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the prefix of the following lines."""
        self.desc = desc or ""

    def _postfix_text(self) -> str:
        return f" [{self.postfix}]" if self.postfix else ""

    def close(self) -> None:
        """Write the summary line (once)."""
        if self._closed:
            return
        self._closed = True
        seconds = time.perf_counter() - self._started
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n} {self.unit}"
        self._write(f"done, {count} in {seconds:.1f}s{self._postfix_text()}")

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    file: IO[str] | None = None,
    leave: bool = True,
    unit: str = "it",
    **tqdm_kwargs: Any,
) -> Any:
    """A progress bar: tqdm on a terminal, a few plain lines (:class:`PlainProgress`) elsewhere.

    Args:
        iterable: What to iterate over, or ``None`` to drive the bar with ``update``.
        total: Number of steps (default ``len(iterable)``).
        desc: Description shown before the bar or at the start of each plain line.
        enabled: ``False`` shows nothing (the bar still iterates).
        file: Output stream (default ``sys.stderr``); it decides terminal or not.
        leave: Keep the tqdm bar on screen when done (terminal only).
        unit: Name of one step.
        **tqdm_kwargs: Passed to tqdm on a terminal (``dynamic_ncols=...``); ignored otherwise.

    Returns:
        A ``tqdm`` bar, or a :class:`PlainProgress` with the same methods.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = progress_bar(total=100, desc="train", file=out)
        >>> for _ in range(100):
        ...     bar.update(1)
        >>> bar.close()
        >>> len(out.getvalue().splitlines())  # start, 25 %, 50 %, 75 %, summary
        5
        >>> list(progress_bar(range(3), enabled=False))
        [0, 1, 2]
    """
    if enabled and is_terminal(file):
        return tqdm(iterable, total=total, desc=desc, file=file, leave=leave, unit=unit, **tqdm_kwargs)
    return PlainProgress(iterable, total=total, desc=desc, enabled=enabled, file=file, unit=unit)
