"""The CLI contract: bad values are usage errors (exit 2) or one-line errors (exit 1), never
a traceback; --version, -h; Ctrl-C is one line and exit 130 with the work so far kept."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from phr_cli import __version__
from phr_cli.cli import app

COMMANDS = ("extract", "inspect", "store", "train", "recommend", "evaluate", "tune", "serve")
# What each command is given besides the hostile options: nothing that would start real work.
MISSING = "missing-folder/missing.mp4"
BASE = {
    "extract": ["extract", "missing-folder"],
    "inspect": ["inspect"],
    "store": ["store", "drop", "missing-folder"],  # a group: its subcommand `drop` is driven
    "train": ["train"],
    "recommend": ["recommend", MISSING],
    "evaluate": ["evaluate"],
    "tune": ["tune"],
    "serve": ["serve"],  # no checkpoint in the work folder: it refuses before binding a port
}
ODD_VALUES = ["", "0", "-1", "-0", "nan", "inf", "-inf", "1e999", "99999999999999999999", "1.5", "gpu",
              "cuda", "cuda:7", "cuda:-1", "CPU", "auto ", "-", "/", "/dev/null", ".", "a\nb", "é",
              "notes.txt", "a-folder", "missing.h5"]
hostile_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.integers(-(2**40), 2**40).map(str),
    st.floats().map(str),
    # argv cannot hold a NUL byte or a lone surrogate
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


def starts_workers(option: str, value: str) -> bool:
    """`--nproc N` (N > 1) launches torchrun processes: parsed before it, but not driven here."""
    try:
        return option == "--nproc" and int(value) > 1
    except ValueError:
        return False


def options_of(command: str) -> list[tuple[str, bool]]:
    """(name, is_flag) of every option of `command`, read from the app itself so that a new
    option is driven too."""
    group = typer.main.get_command(app)
    found = group.commands[command]
    if hasattr(found, "commands"):  # a group (`phr store`): the subcommand BASE drives
        found = found.commands[BASE[command][1]]
    return [(param.opts[0], bool(param.is_flag)) for param in found.params
            if param.param_type_name == "option" and "--help" not in param.opts]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "notes.txt").write_text("not a store, not a checkpoint\n")
    (folder / "a-folder").mkdir()
    return folder


def assert_clean_failure(result) -> None:
    """Exit 2 (usage error), or exit 1 with exactly one `error:` line last; no traceback."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    if result.exit_code == 1:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error: "), result.stderr
        assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr


def test_every_command_is_driven():
    assert set(typer.main.get_command(app).commands) == set(COMMANDS) == set(BASE)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_values_are_usage_errors_or_one_line(data, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    command = data.draw(st.sampled_from(COMMANDS))
    chosen = data.draw(st.lists(st.sampled_from(options_of(command)), min_size=1, max_size=3, unique=True))
    arguments = list(BASE[command])
    for name, is_flag in chosen:
        if is_flag:
            arguments.append(name)
        else:
            value = data.draw(hostile_values.filter(lambda value, option=name: not starts_workers(option, value)))
            arguments += [name, value]
    if command in ("extract", "recommend") and data.draw(st.booleans()):
        arguments[1] = data.draw(st.sampled_from(["notes.txt", "/dev/null", MISSING]))
    assert_clean_failure(CliRunner().invoke(app, arguments))


WITH_DEVICE = [command for command in COMMANDS if ("--device", False) in options_of(command)]


FILE_OPTIONS = ("--store", "--checkpoint", "--weights-dir", "--plot")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("value", ["notes.txt", "a-folder", "/dev/null", "missing.h5"])
def test_the_wrong_kind_of_file_is_one_line(command, value, workdir, monkeypatch):
    """A text file, a folder, a device or nothing where a store, checkpoint or folder belongs."""
    monkeypatch.chdir(workdir)
    for option, _ in options_of(command):
        if option in FILE_OPTIONS:
            others = [arg for name in ("--store", "--checkpoint") if name != option and (name, False)
                      in options_of(command) for arg in (name, value)]
            assert_clean_failure(CliRunner().invoke(app, [*BASE[command], option, value, *others]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)),
       command=st.sampled_from(["evaluate", "recommend", "inspect", "train"]))
def test_any_bytes_as_a_store_or_checkpoint_is_one_line(content, command, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    (workdir / "garbage").write_bytes(content)
    arguments = [*BASE[command], "--store", "garbage"]
    if ("--checkpoint", False) in options_of(command):
        arguments += ["--checkpoint", "garbage"]
    assert_clean_failure(CliRunner().invoke(app, arguments))


@pytest.mark.parametrize("command", WITH_DEVICE)
@pytest.mark.parametrize("value", ["gpu", "cuda:x"])
def test_a_bad_device_name_is_a_usage_error(command, value, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    result = CliRunner().invoke(app, [*BASE[command], "--device", value])
    assert result.exit_code == 2 and f"unknown device '{value}'" in result.stderr


@pytest.mark.parametrize("command", WITH_DEVICE)
def test_cuda_without_cuda_is_one_line_on_every_command(command, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, [*BASE[command], "--device", "cuda"])
    assert_clean_failure(result)
    assert result.exit_code == 1 and "CUDA is not available" in result.stderr


@pytest.mark.parametrize("command, option, value", [
    ("extract", "--workers", "-1"),
    ("extract", "--batch-size", "0"),
    ("extract", "--file-timeout", "nan"),
    ("extract", "--precision", "fp8"),
    ("train", "--fusion", "avg"),
    ("train", "--variant", "none"),
    ("train", "--split-by", "date"),
    ("train", "--lr", "0"),
    ("train", "--l2", "-1e-4"),
    ("train", "--epochs", "0"),
    ("train", "--seed", "-1"),
    ("recommend", "--top", "0"),
    ("evaluate", "--protocol", "paper"),
    ("evaluate", "--plot", "comparison.pdf"),
])
def test_out_of_range_values_are_usage_errors_naming_the_option(command, option, value, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    result = CliRunner().invoke(app, [*BASE[command], option, value])
    assert result.exit_code == 2, result.output
    assert option in result.stderr and "Traceback" not in result.output


def numeric_options() -> list[tuple[str, str, type]]:
    """(command, option, int or float) of every numeric option, read from the app itself."""
    group = typer.main.get_command(app)
    return [(name, param.opts[0], param.type_descriptor.annotation)
            for name, command in group.commands.items() for param in command.params
            if param.param_type_name == "option" and param.type_descriptor.annotation in (int, float)]


def declared_range(command: str, option: str) -> tuple[float | None, float | None, bool]:
    """(lowest, highest, lowest included) as the option declares it: typer's min/max on an
    integer, the `finite` callback's range on a float."""
    group = typer.main.get_command(app)
    param = next(p for p in group.commands[command].params if p.param_type_name == "option" and p.opts[0] == option)
    checked = getattr(param.type_descriptor.parameter_info.callback, "__self__", None)
    if checked is not None:
        return checked.minimum, checked.maximum, checked.inclusive
    return param.min, param.max, True


@pytest.mark.parametrize("command, option, kind", numeric_options())
def test_every_number_is_checked_when_parsed(command, option, kind, workdir, monkeypatch):
    """One rule for every number: a declared range, enforced when parsed. nan, inf, -1 and 0
    are usage errors naming the option, or (inside the range) the command runs and fails on
    its missing inputs in one line, never a traceback or a hang."""
    monkeypatch.chdir(workdir)
    lowest, highest, included = declared_range(command, option)
    assert lowest is not None, f"{command} {option} declares no range"
    for value in ("nan", "inf", "-1", "0"):
        result = CliRunner().invoke(app, [*BASE[command], option, value])
        number = float(value)
        allowed = math.isfinite(number) and (number > lowest or (number == lowest and included)) \
            and (highest is None or number <= highest) and (kind is float or number.is_integer())
        if allowed:
            assert_clean_failure(result)
            assert result.exit_code == 1, (command, option, value, result.output)
        else:
            assert result.exit_code == 2, (command, option, value, result.output)
            assert option in result.stderr and "Traceback" not in result.output


def test_choice_errors_list_the_choices():
    result = CliRunner().invoke(app, ["train", "--fusion", "avg"])
    assert result.exit_code == 2 and "'concat'" in result.stderr and "'sum'" in result.stderr


def test_choices_are_the_library_s():
    from phr_cli.cli import evaluate, extract, train
    from phr_cli.data.graph import split_posts
    from phr_cli.encoders.registry import PRECISIONS
    from phr_cli.evaluation.metrics import ProtocolName
    from phr_cli.model.config import Fusion, Variant, VideoMessages

    assert [m.value for m in train.Fusion] == [m.value for m in Fusion]
    # "paper" is the paper's network alone (ModelConfig.paper), the others the attention variants.
    assert [m.value for m in train.TrainVariant if m is not train.TrainVariant.PAPER] == [m.value for m in Variant]
    assert [m.value for m in extract.Precision] == list(PRECISIONS)
    assert [m.value for m in evaluate.Protocol] == list(get_args(ProtocolName))
    assert {m.value for m in train.VideoMessages} == {m.value for m in VideoMessages}
    from test_train import planted_posts

    posts = planted_posts()
    posts.times = np.arange(len(posts), dtype=np.float64)  # the time split needs a time per post
    for unit in train.SplitBy:
        split_posts(posts, seed=0, by=unit.value)


def test_version_and_short_help():
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"phr {__version__}"
    for arguments in (["-h"], ["train", "-h"], ["evaluate", "-h"]):
        shown = runner.invoke(app, arguments)
        assert shown.exit_code == 0 and "Usage" in shown.stdout, arguments
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


def test_ctrl_c_is_one_line_and_exit_130(workdir, monkeypatch):
    def interrupted(*arguments):
        raise KeyboardInterrupt

    monkeypatch.chdir(workdir)
    monkeypatch.setattr("phr_cli.serving.inspection.inspect_path", interrupted)
    result = CliRunner().invoke(app, ["inspect"])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted; work so far kept"


@pytest.fixture(scope="module")
def text_store(tmp_path_factory) -> Path:
    """Text-only posts (no decoding): a store that trains in well under a second an epoch."""
    from phr_cli.extract import ExtractOptions, extract

    root = tmp_path_factory.mktemp("sigint") / "posts"
    root.mkdir()
    lines = ["video,user,caption,hashtags"]
    for user in range(12):
        for post in range(10):
            lines.append(f",user{user},topic {post % 4} words {user} {post},topic{post % 4} mine{user % 3}")
    (root / "posts.csv").write_text("\n".join(lines) + "\n")
    store = root.parent / "text.h5"
    extract(root, store, ExtractOptions(device="cpu", workers=0, random_weights=True))
    return store


def test_sigint_during_training_keeps_the_finished_epochs(text_store, tmp_path):
    """A real SIGINT to the process group, as Ctrl-C sends: one line, exit 130, and the
    checkpoint holds the epochs finished before it (a rerun resumes from them)."""
    from phr_cli.training.checkpoint import load_checkpoint

    checkpoint = tmp_path / "model.pt"
    command = [sys.executable, "-m", "phr_cli", "train", "--store", str(text_store), "--checkpoint",
               str(checkpoint), "--device", "cpu", "--dim", "8", "--epochs", "100000", "--patience", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # As from a terminal: a test run started in the background inherits SIGINT ignored, and
    # Python then installs no handler for it.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    waited = time.monotonic()
    while not checkpoint.exists() and time.monotonic() - waited < 120 and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted; work so far kept"
    assert len(load_checkpoint(checkpoint).history) >= 1


def test_train_reports_epochs_without_nan_and_draws_its_curve(text_store, tmp_path):
    checkpoint = tmp_path / "model.pt"
    result = CliRunner().invoke(app, ["train", "--store", str(text_store), "--checkpoint", str(checkpoint),
                                      "--device", "cpu", "--dim", "8", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output.lower()
    assert "epoch" in result.stderr and "3/3" in result.stderr  # the log's plain progress lines
    assert "fitting PITF's factors …" in result.stderr  # the default model's steps after the epochs
    curve = tmp_path / "model-curve.png"
    assert f"training curve → {curve}" in result.stdout
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    plot = tmp_path / "comparison.png"
    evaluated = CliRunner().invoke(app, ["evaluate", "--store", str(text_store), "--checkpoint", str(checkpoint),
                                         "--device", "cpu", "--no-baselines", "--plot", str(plot)])
    assert evaluated.exit_code == 0, evaluated.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unwritable = CliRunner().invoke(app, ["evaluate", "--store", str(text_store), "--checkpoint", str(checkpoint),
                                          "--device", "cpu", "--no-baselines", "--plot",
                                          str(tmp_path / "missing-folder" / "c.png")])
    assert_clean_failure(unwritable)
    assert "missing-folder/c.png: cannot write the picture" in unwritable.stderr
