"""The Typer app every command registers on, its version/main callback, and what the commands
share: the consoles, the option types (--device, --quiet, ...), `fail` and `printable`.

Options are `Annotated` types whose defaults the commands take from the library's
configuration dataclasses (`TrainConfig.epochs`, `NetworkConfig.dim`, `ServeOptions.port`, ...)
and whose choices are the library's enums, so that no default or choice is stated twice.
Those configurations import without torch; heavy modules (torch, the encoders) are imported
inside the commands so that `phr --help` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from typer._click import Command, Parameter
from typer._click.decorators import help_option
from typer.core import TyperArgument, TyperGroup, TyperOption

from phr_cli import __version__
from phr_cli.choices import Choice
from phr_cli.devices import DEVICE_NAMES, check_device_name, keep_freed_memory, resolve_device
from phr_cli.errors import PhrError

out = Console()
err = Console(stderr=True)


class _Commands(TyperGroup):
    """Ctrl-C is one line and exit 130 (128 + SIGINT) instead of click's "Aborted!": the
    store writer and the checkpoint writer have kept every finished video and epoch, and
    their locks are released on the way out. Every command's placeholders are made to read
    (`readable_metavars`) here, where help and the generated docs/cli.md both see them."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        readable_metavars(self)

    def get_params(self, ctx) -> list[Parameter]:
        params = super().get_params(ctx)
        for param in params:  # typer adds --install-completion and --show-completion late
            _name_value(param)
        return params

    def invoke(self, ctx) -> Any:  # typer's own (vendored click) Context
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("interrupted; work so far kept", highlight=False)
            raise typer.Exit(130) from None


# Typer shows a value's Python type (`<int>`, `<bool>` on a flag, `{videos}`); these read as
# click's classic placeholders.
_PLACEHOLDERS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


HELP_OPTION_NAMES = ["-h", "--help"]


def _own_help_option(command: Command) -> None:
    """-h/--help as an option of the command itself, so that it too shows no `<bool>`."""
    command.add_help_option = False
    help_option(HELP_OPTION_NAMES)(command)
    command.params[-1].metavar = ""


def readable_metavars(command: Command) -> None:
    """Name every parameter's value the way help pages do: an argument by its name in capitals
    (VIDEOS), a flag by nothing, a choice by its choices, a number by its kind and bounds; an
    explicit `metavar=` is kept. Subcommands too."""
    _own_help_option(command)
    for param in command.params:
        _name_value(param)
    if isinstance(command, TyperGroup):
        for subcommand in command.commands.values():
            readable_metavars(subcommand)


def _name_value(param: Parameter) -> None:
    if not isinstance(param, TyperArgument | TyperOption) or param.metavar is not None:
        return
    described = param.type_descriptor
    if isinstance(param, TyperArgument):
        param.metavar = (param.name or "value").upper()
    elif param.is_flag:
        param.metavar = ""
    elif described.is_choice:
        param.metavar = "[" + "|".join(str(getattr(c, "value", c)) for c in described.choices or ()) + "]"
    else:
        kind = described.annotation
        if get_origin(kind) is list:  # a repeatable option: each value's kind
            kind = get_args(kind)[0]
        placeholder = _PLACEHOLDERS.get(kind, str(kind).upper()) if isinstance(kind, type) else "VALUE"
        declared = described.parameter_info.callback  # typer's wrapper hides the range
        bounds = getattr(getattr(declared, "__self__", None), "bounds", None)
        param.metavar = f"{placeholder} [{bounds}]" if bounds else placeholder


app = typer.Typer(
    cls=_Commands,
    help="Personalised hashtag recommendation for micro-videos (GCN-PHR).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": HELP_OPTION_NAMES},
)

DEFAULT_STORE = Path("phr_data/features.h5")
DEFAULT_CHECKPOINT = Path("models/gcn-phr.pt")
# --device of the commands without a configuration of their own (evaluate, recommend, serve).
DEFAULT_DEVICE = "auto"


def choices(name: str, values: Iterable[str]) -> type[Choice]:
    """An enum of `values` (members named by their values, upper-cased): the choices of an
    option whose values the library keeps as plain strings, or which adds one of its own."""
    return Choice(name, [(value.upper(), str(value)) for value in values])  # type: ignore[call-overload]


# --split-by of train and tune: the library's data.graph.SPLITS (a module that imports numpy
# and h5py); tests/test_cli.py checks that both agree.
class SplitBy(str, Enum):
    post = "post"
    item = "item"
    time = "time"


def _device_name(value: str) -> str:
    """auto, cpu, cuda or cuda:N, checked at parse time; whether CUDA is there is checked
    when the command starts (`check_device`)."""
    try:
        return check_device_name(value)
    except PhrError as error:
        raise typer.BadParameter(str(error)) from None


def _complete_device(incomplete: str) -> list[str]:
    return [name for name in DEVICE_NAMES if name.startswith(incomplete)]


class _FiniteRange:
    """A float option's range: finite (click's ranges let nan and inf through), at least (or,
    not inclusive, above) `minimum` and at most `maximum`. `bounds` is shown in help."""

    def __init__(self, minimum: float, inclusive: bool = True, maximum: float | None = None) -> None:
        self.minimum, self.inclusive, self.maximum = minimum, inclusive, maximum
        if maximum is None:
            self.bounds = f"x>={minimum:g}" if inclusive else f"x>{minimum:g}"
        else:
            self.bounds = f"{minimum:g}{'<=' if inclusive else '<'}x<={maximum:g}"

    def check(self, value: float | None) -> float | None:
        if value is None:  # an optional option left out
            return value
        if not math.isfinite(value) or value < self.minimum or (value == self.minimum and not self.inclusive) \
                or (self.maximum is not None and value > self.maximum):
            raise typer.BadParameter(f"{value} is not a finite number with {self.bounds}")
        return value


def finite(minimum: float, inclusive: bool = True, maximum: float | None = None) -> Callable[..., float | None]:
    """The callback of a float option (typer takes a method, not a callable object)."""
    return _FiniteRange(minimum, inclusive, maximum).check


SEED_MAX = 2**32 - 1  # numpy's seed range

# Options several commands share; each command gives the default.
DeviceOption = Annotated[str, typer.Option(
    "--device", parser=_device_name, metavar=f"[{'|'.join(DEVICE_NAMES)}|cuda:N]", autocompletion=_complete_device,
    help="auto (CUDA when present), cpu, cuda or cuda:N.")]
QuietOption = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress display (errors and the summary still print).")]
WeightsDirOption = Annotated[Path | None, typer.Option(
    "--weights-dir", envvar="PHR_WEIGHTS_DIR",
    help="Folder holding encoder weight files (searched before the torch hub cache).")]
RandomWeightsOption = Annotated[bool, typer.Option(
    "--random-weights",
    help="Use seeded random ResNet50/VGGish weights instead of pretrained ones (for tests "
    "and offline trials; every output records it).")]


def fail(message: str, code: int = 1) -> NoReturn:
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
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                          help="Print phr's version and exit.")] = False,
) -> None:
    """Personalised hashtag recommendation for micro-videos (GCN-PHR)."""
    keep_freed_memory()


def check_device(name: str) -> None:
    """Fail fast, in one line, on a device this machine lacks (before any loading)."""
    try:
        resolve_device(name)
    except PhrError as error:
        fail(str(error))


def quiet_libraries() -> None:
    """The terminal belongs to phr's own progress bars: silence transformers' loading bar."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


JournalOption = Annotated[str | None, typer.Option(
    "--journal", metavar="PATH|URL", help="Take the posts `phr serve` recorded in this journal (a file, or "
    "postgresql://…) into the store, once each.")]


def take_journal(journal: str, store: Path) -> None:
    """`--journal`: the journal's posts the store lacks taken into it (a one-line error if it cannot be read)."""
    from phr_cli.data.journal import open_journal, take_into_store

    try:
        with open_journal(journal) as opened:
            intake = take_into_store(opened, store)
    except PhrError as error:
        fail(str(error))
    err.print(f"journal {printable(journal)}: {intake.posts} post(s) taken into the store "
              f"({intake.already} there before)", highlight=False, soft_wrap=True)
