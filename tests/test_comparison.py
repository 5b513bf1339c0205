"""`phr evaluate` on a store that grew or changed after training (comparison.evaluate_store)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from reliability.reliability_data import write_text_posts
from typer.testing import CliRunner

from phr_cli.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RANDOM = ["--random-weights", "--workers", "0", "--device", "cpu"]


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def evaluated(store: Path, checkpoint: Path):
    return invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu",
                  "--no-baselines", "--json")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = write_text_posts(tmp_path_factory.mktemp("grown") / "first", users=10, posts_per_user=8)
    store, checkpoint = root.parent / "features.h5", root.parent / "model.pt"
    assert invoke("extract", root, "--store", store, *RANDOM).exit_code == 0
    result = invoke("train", "--store", store, "--checkpoint", checkpoint, "--epochs", "2", "--dim", "8",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    return root, store, checkpoint


def test_a_checkpoint_evaluates_on_its_own_posts_after_others_were_added(trained, tmp_path):
    _root, original, checkpoint = trained
    before = evaluated(original, checkpoint)
    assert before.exit_code == 0, before.output
    store = Path(shutil.copy(original, tmp_path / "grown.h5"))
    more = tmp_path / "more"
    more.mkdir()
    (more / "posts.csv").write_text("video,user,caption,hashtags\n" + "".join(
        f",newcomer{i},sea waves beach {i},topic0 fresh\n" for i in range(5)))
    added = invoke("extract", more, "--store", store, *RANDOM)
    assert added.exit_code == 0 and "5 added" in added.stdout and "80 kept" in added.stdout

    after = evaluated(store, checkpoint)
    assert after.exit_code == 0, after.output
    assert "5 trainable post(s) added since the checkpoint was trained" in after.stderr
    assert "evaluating on the 80 it was trained on" in after.stderr
    first, second = json.loads(before.stdout), json.loads(after.stdout)
    assert second["methods"][0]["metrics"] == first["methods"][0]["metrics"]  # the same posts, the same figures


def test_a_checkpoint_whose_posts_are_gone_is_a_one_line_error(trained, tmp_path):
    root, original, checkpoint = trained
    store = Path(shutil.copy(original, tmp_path / "edited.h5"))
    manifest = root / "posts.csv"
    text = manifest.read_text()
    manifest.write_text("\n".join(text.splitlines()[:-3]) + "\n")  # three posts fewer
    try:
        assert "3 removed" in invoke("extract", root, "--store", store, *RANDOM).stdout
    finally:
        manifest.write_text(text)
    result = evaluated(store, checkpoint)
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and "3 of the 80 posts the checkpoint was trained on are no longer" in message


def test_the_json_names_what_was_evaluated(trained):
    _, store, checkpoint = trained
    result = evaluated(store, checkpoint)
    assert result.exit_code == 0, result.output
    source = json.loads(result.stdout)["provenance"]
    assert source["checkpoint"] == str(checkpoint) and source["store"] == str(store)
    assert source["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert source["trained_on"] == str(store.absolute())  # train records the store's absolute path
    assert source["random_weights"] is True and source["encoders"]["visual"]["name"] == "resnet50"
    assert source["encoders"]["visual"]["weights"] == "random-init(seed=0)"


def test_figures_from_too_few_cases_or_hashtags_come_with_a_warning(trained):
    _, store, checkpoint = trained
    result = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu", "--no-baselines")
    assert result.exit_code == 0, result.output
    assert "fitting baselines" not in result.stderr and "scoring the test split" in result.stderr
    assert f"checkpoint {checkpoint} (sha256 " in result.stdout and "RANDOM encoder weights" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("test case(s)" in line and "fewer than 30" in line for line in warnings), result.stderr
    assert any("only 9 known hashtags" in line for line in warnings), result.stderr
    assert "all 9 known hashtags" in result.stdout and "1,000 sampled" not in result.stdout
