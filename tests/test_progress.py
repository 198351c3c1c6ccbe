"""progress_bar: tqdm on a terminal, a few plain lines in files and logs."""

from __future__ import annotations

import io

import pytest
from tqdm.auto import tqdm

from reidexplain._progress import PlainProgress, is_terminal, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_writes_a_few_plain_lines():
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="fit", file=out)
    assert isinstance(bar, PlainProgress)
    for step in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1.0 / (step + 1):.3f}")
    bar.close()
    bar.close()  # a second close writes nothing
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 5
    assert lines[0] == "fit: started, 1000 it"
    assert [line.split(" (")[0] for line in lines[1:4]] == ["fit: 250/1000", "fit: 500/1000", "fit: 750/1000"]
    assert lines[-1].startswith("fit: done, 1000/1000 in ") and lines[-1].endswith("[loss=0.001]")


def test_non_terminal_iteration_unknown_total_and_disabled():
    out = io.StringIO()
    items = list(progress_bar(iter(range(7)), desc="scan", file=out))
    assert items == list(range(7))
    lines = out.getvalue().splitlines()
    assert lines[0] == "scan: started" and lines[1].startswith("scan: done, 7 it in ")
    assert len(lines) == 2
    quiet = io.StringIO()
    assert list(progress_bar(range(5), desc="x", enabled=False, file=quiet)) == list(range(5))
    with progress_bar(total=3, enabled=False, file=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_small_totals_and_context_manager():
    out = io.StringIO()
    with progress_bar(total=2, desc="two", file=out) as bar:
        bar.update(1)
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "two: started, 2 it" and lines[-1].startswith("two: done, 2/2")
    assert len(lines) == 3  # a milestone at 1 of 2
    with pytest.raises(TypeError, match="no iterable"):
        iter(PlainProgress(total=3, enabled=False)).__next__()


def test_terminal_gets_tqdm():
    out = FakeTerminal()
    assert is_terminal(out) and not is_terminal(io.StringIO())
    bar = progress_bar(range(4), desc="tty", file=out, mininterval=0)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2, 3]
    assert "tty" in out.getvalue() and "4/4" in out.getvalue()
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)
