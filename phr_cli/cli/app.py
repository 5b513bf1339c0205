"""The Typer app every command registers on, its version/main callback, and what the commands
share: the consoles, the option types (--device, --quiet, ...), `fail` and `printable`.

Heavy modules (torch, the encoders) are imported inside the commands so that
`phr --help` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from phr_cli import __version__
from phr_cli.errors import PhrError

out = Console()
err = Console(stderr=True)


class _Commands(TyperGroup):
    """Ctrl-C is one line and exit 130 (128 + SIGINT) instead of click's "Aborted!": the
    store writer and the checkpoint writer have kept every finished video and epoch, and
    their locks are released on the way out."""

    def invoke(self, ctx) -> Any:  # typer's own (vendored click) Context
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("interrupted; work so far kept", highlight=False)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    help="Personalised hashtag recommendation for micro-videos (GCN-PHR).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_STORE = Path("phr_data/features.h5")
DEFAULT_CHECKPOINT = Path("models/gcn-phr.pt")

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def _device_name(value: str) -> str:
    """auto, cpu, cuda or cuda:N, checked at parse time; whether CUDA is there is checked
    when the command starts (`check_device`)."""
    from phr_cli.devices import check_device_name

    try:
        return check_device_name(value)
    except PhrError as error:
        raise typer.BadParameter(str(error)) from None


def _complete_device(incomplete: str) -> list[str]:
    return [name for name in DEVICE_CHOICES if name.startswith(incomplete)]


def finite(minimum: float, inclusive: bool = True) -> Any:
    """An option callback: the number is finite (a range alone lets nan and inf through)
    and at least (or, not inclusive, above) `minimum`."""

    def check(value: float) -> float:
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise typer.BadParameter(f"{value} is not a finite number {bound}")
        return value

    return check


SEED_MAX = 2**32 - 1  # numpy's seed range

DeviceOption = typer.Option("auto", "--device", parser=_device_name, metavar="[auto|cpu|cuda|cuda:N]",
                            autocompletion=_complete_device, help="auto (CUDA when present), cpu, cuda or cuda:N.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress display (errors and the summary still print).")
WeightsDirOption = typer.Option(
    None, "--weights-dir", envvar="PHR_WEIGHTS_DIR",
    help="Folder holding encoder weight files (searched before the torch hub cache).",
)
RandomWeightsOption = typer.Option(
    False, "--random-weights",
    help="Use seeded random ResNet50/VGGish weights instead of pretrained ones (for tests "
    "and offline trials; every output records it).",
)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {printable(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def printable(path: Path | str) -> str:
    """A file name on one line: control characters (a newline in a name) escaped, and
    rich markup characters escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))
    return escape(text)


def _version(value: bool) -> None:
    if value:
        out.print(f"phr {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print phr's version and exit."),
) -> None:
    """Personalised hashtag recommendation for micro-videos (GCN-PHR)."""
    from phr_cli.devices import keep_freed_memory

    keep_freed_memory()


def check_device(name: str) -> None:
    """Fail fast, in one line, on a device this machine lacks (before any loading)."""
    from phr_cli.devices import resolve_device

    try:
        resolve_device(name)
    except PhrError as error:
        fail(str(error))


def quiet_libraries() -> None:
    """The terminal belongs to phr's own progress bars: silence transformers' loading bar."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
