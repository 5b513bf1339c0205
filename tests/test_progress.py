"""Progress on a terminal is rich's live bar; in a log it is plain lines, phase by phase."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TextColumn

from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress, SpeedColumn


def extract_like(console: Console, quiet: bool = False) -> None:
    progress = PhaseProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), CountColumn(),
                             SpeedColumn("videos"), EtaColumn(), console=console, quiet=quiet, every=0.0)
    task = progress.add_task("reading posts …", total=None)
    with progress:
        progress.phase(task, "loading encoders …")
        progress.phase(task, "extracting …", 3)
        for done in (1, 2, 3):
            progress.update(task, completed=done)
        progress.phase(task, "embedding captions …")


def test_a_log_gets_one_plain_line_per_phase_and_update():
    log = io.StringIO()
    extract_like(Console(file=log, force_terminal=False, width=200))
    lines = log.getvalue().splitlines()
    assert lines[:2] == ["reading posts …", "loading encoders …"]  # no "0/?", no rate before there is one
    assert lines[2].startswith("extracting …") and "0/3" in lines[2]
    assert any("3/3" in line and "videos/s" in line and "ETA" in line for line in lines)
    assert lines[-1] == "embedding captions …"
    assert "\x1b[" not in log.getvalue() and "━" not in log.getvalue()  # plain: no colours, no bars


def test_a_log_keeps_the_last_state_of_each_phase_between_its_intervals():
    log = io.StringIO()
    progress = PhaseProgress(TextColumn("{task.description}"), CountColumn(),
                             console=Console(file=log, force_terminal=False, width=200), every=3600.0)
    task = progress.add_task("reading …", total=None)
    with progress:
        progress.phase(task, "epoch", 5)
        for done in (1, 2, 3):
            progress.update(task, completed=done)
        progress.phase(task, "fitting …", 10)
        progress.update(task, completed=4)
    assert log.getvalue().splitlines() == ["reading …", "epoch  0/5", "epoch  3/5", "fitting …   0/10",
                                           "fitting …   4/10"]


def test_quiet_shows_nothing():
    log = io.StringIO()
    extract_like(Console(file=log, force_terminal=False), quiet=True)
    assert log.getvalue() == ""
