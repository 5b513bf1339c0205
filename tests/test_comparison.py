"""`phr evaluate` (comparison.evaluate_store): a store that grew or changed after training, the
TREC run files, the paired tests, the segments and several seeds."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
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
                    "--device", "cpu", "--seeds", "2")  # seed 0 writes model.pt, seed 1 model.seed1.pt
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
    assert any("test case(s)" in line and "fewer than 30" in line and "docs/results.md" in line
               for line in warnings), result.stderr
    assert any("only 9 known hashtags" in line for line in warnings), result.stderr
    assert "all 9 known hashtags" in result.stdout and "1,000 sampled" not in result.stdout


@pytest.mark.filterwarnings("ignore:unsafe cast from uint64 to int64")  # inside ranx's numba code
def test_run_files_give_phr_s_figures_and_p_values_to_ranx(trained, tmp_path, request, monkeypatch):
    _, store, checkpoint = trained
    runs = tmp_path / "runs"
    result = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu", "--json",
                    "--runs", runs)
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    methods = comparison["methods"]
    assert {path.name for path in runs.iterdir()} == {"qrels.txt", *(
        name.replace(" ", "_") + ".run" for name in (m["name"] for m in methods))}
    if "numba" not in sys.modules:  # ranx's numba compiles for a minute: kept between runs in pytest's cache
        monkeypatch.setenv("NUMBA_CACHE_DIR", str(request.config.cache.mkdir("numba")))
    from ranx import Qrels, Run, compare, evaluate

    qrels = Qrels.from_file(str(runs / "qrels.txt"), kind="trec")
    queries = list(qrels.to_dict())
    assert len(queries) == comparison["counts"]["cases"] and all(" " not in query for query in queries)
    loaded = {m["name"]: Run.from_file(str(runs / (m["name"].replace(" ", "_") + ".run")), kind="trec")
              for m in methods}
    for method in methods:
        figures = evaluate(qrels, loaded[method["name"]], ["precision@5", "ndcg@5"])
        assert figures["precision@5"] == pytest.approx(method["metrics"]["full"]["all"]["P@5"], abs=1e-6)
        assert figures["ndcg@5"] == pytest.approx(method["metrics"]["full"]["all"]["nDCG@5"], abs=1e-4)
    # phr's Student t p-values are those ranx's compare gives (over the same per-case values)
    model, baseline = methods[0], methods[1]
    for run, name in ((loaded[model["name"]], "model"), (loaded[baseline["name"]], "baseline")):
        run.name = name
    report = compare(qrels, [loaded[model["name"]], loaded[baseline["name"]]], ["precision@5", "ndcg@5"],
                     stat_test="student")
    for ours, theirs in (("P@5", "precision@5"), ("nDCG@5", "ndcg@5")):
        tested = baseline["significance"]["full"][ours]
        expected = report.comparisons["model", "baseline"][theirs]["p_value"]
        assert tested["student"] == pytest.approx(1.0 if np.isnan(expected) else expected, abs=1e-9)
        assert tested["student"] <= tested["student_holm"] <= 1 and 0 < tested["fisher"] <= tested["fisher_holm"]


def test_json_holds_tests_and_segments_and_the_same_run_gives_the_same_verdict(trained):
    _, store, checkpoint = trained
    results = [invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu", "--json")
               for _ in range(2)]
    assert all(r.exit_code == 0 for r in results), results[0].output
    first, second = (json.loads(r.stdout) for r in results)
    assert [m["significance"] for m in first["methods"]] == [m["significance"] for m in second["methods"]]
    model, *baselines = first["methods"]
    assert model["significance"] == {} and len(baselines) >= 5
    for baseline in baselines:
        assert set(baseline["significance"]) == {"sampled", "full"}
        assert set(baseline["significance"]["full"]) == {"P@5", "nDCG@5"}
    segments = model["segments"]["full"]
    assert sum(group["cases"] for group in segments["user activity"].values()) == first["counts"]["cases"]
    assert segments["user activity"]["0 (cold)"]["cases"] == first["counts"]["cold_cases"]
    assert sum(group["cases"] for group in segments["item"].values()) == first["counts"]["cases"]
    assert 0 < segments["coverage@5"] <= 1
    assert sum(first["segments"]["hashtags"].values()) == first["counts"]["known_hashtags"]
    table = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu", "--segments")
    assert table.exit_code == 0, table.output
    assert "R@5 by segment" in table.stdout and "Holm" in table.stdout


def test_several_seeds_give_mean_and_deviation(trained, tmp_path):
    _, store, checkpoint = trained
    seed1 = checkpoint.with_name("model.seed1.pt")
    assert seed1.is_file()
    pattern = str(checkpoint.parent / "model*.pt")
    result = invoke("evaluate", "--store", store, "--checkpoint", pattern, "--device", "cpu", "--json",
                    "--no-baselines", "--runs", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["seeds"] == 2 and summary["checkpoints"] == [str(checkpoint), str(seed1)]
    assert [c["split"]["seed"] for c in summary["comparisons"]] == [0, 1]
    each = [c["methods"][0]["metrics"]["full"]["all"]["P@5"] for c in summary["comparisons"]]
    model = summary["methods"][0]
    assert model["metrics"]["full"]["all"]["P@5"] == pytest.approx(np.mean(each))
    assert model["std"]["full"]["all"]["P@5"] == pytest.approx(np.std(each, ddof=1))
    assert (tmp_path / "runs" / "model.seed1" / "qrels.txt").is_file()
    table = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--checkpoint", seed1,
                   "--device", "cpu", "--no-baselines", "--protocol", "full")
    assert table.exit_code == 0, table.output
    assert "mean ± standard deviation over 2 checkpoints" in table.stdout and "±" in table.stdout


def test_runs_need_the_full_ranking(trained, tmp_path):
    _, store, checkpoint = trained
    result = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--protocol", "sampled",
                    "--runs", tmp_path)
    assert result.exit_code == 2 and "--protocol full or both" in result.output
    assert invoke("evaluate", "--store", store, "--checkpoint", str(tmp_path / "none*.pt")).exit_code == 2




def test_checkpoints_of_one_split_share_their_baselines(trained, tmp_path):
    from phr_cli.training.comparison import evaluate_checkpoints

    _, store, checkpoint = trained
    copy = Path(shutil.copy(checkpoint, tmp_path / "again.pt"))
    first, second = evaluate_checkpoints(store, [checkpoint, copy], "full", ("global popularity",))
    assert second.methods[1].metrics is first.methods[1].metrics  # fitted and scored once
    assert second.methods[0].metrics is not first.methods[0].metrics
    assert second.methods[1].significance == first.methods[1].significance


def test_unseen_hashtags_are_ranked_on_request(trained):
    _, store, checkpoint = trained
    result = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu", "--no-baselines",
                    "--unseen-hashtags", "--json")
    assert result.exit_code == 0, result.output
    unseen = json.loads(result.stdout)["unseen"]
    assert set(unseen["methods"]) >= {"GCN-PHR + text map", "caption words"}
    assert unseen["counts"]["known_hashtags"] == 9 and "ridge α" in unseen["notes"]["GCN-PHR + text map"]
    shown = invoke("evaluate", "--store", store, "--checkpoint", checkpoint, "--device", "cpu", "--no-baselines",
                   "--unseen-hashtags")
    assert shown.exit_code == 0 and "hashtags unseen in training" in shown.stdout
    assert json.loads(evaluated(store, checkpoint).stdout)["unseen"] == {}  # only on request
