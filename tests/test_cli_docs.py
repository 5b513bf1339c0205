"""docs/cli.md is what Typer generates from the app: a changed option without `make docs`
fails here (the command is the Makefile's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_generated_from_the_app(tmp_path):
    generated = tmp_path / "cli.md"
    subprocess.run([sys.executable, "-m", "typer", "phr_cli.cli", "utils", "docs", "--name", "phr",
                    "--title", "phr command reference", "--output", str(generated)],
                   check=True, capture_output=True)
    assert generated.read_text() == DOCS.read_text(), "docs/cli.md is stale: run `make docs`"


def test_help_placeholders_read():
    reference = DOCS.read_text()
    assert "<bool>" not in reference and "{videos}" not in reference and "<int>" not in reference
    assert "$ phr extract [OPTIONS] {VIDEOS}" in reference
    assert "`--port INTEGER`" in reference and "`--lr FLOAT [x>0]`" in reference
