"""`phr recommend` end to end: clips with planted structure -> extract -> train -> recommend.

Three topics differ in colour, motion and sound; each has two hashtags. Six users post clips
of every topic and each adds one personal hashtag, so only the content tells the topic and
only the user tells the personal hashtag. Every clip is posted by three users (the same upload
by several people), which triples the posts without decoding more video.
"""

from __future__ import annotations

import copy
import json
import shutil
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from conftest import FAST_SAMPLING
from phr_cli.cli import app
from phr_cli.data.posts import caption_without_hashtags
from phr_cli.errors import EncoderMismatchError
from phr_cli.extract import ExtractOptions, extract
from phr_cli.model.config import EvidenceConfig, ItemIdConfig, ModelConfig, NetworkConfig
from phr_cli.serving.recommend import ClipRecommendation, Recommender
from phr_cli.training.checkpoint import Checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support import media

TOPIC_TONES = {"ocean": 220.0, "fire": 880.0, "city": 2000.0}
TOPIC_HASHTAGS = {"ocean": ["ocean", "waves"], "fire": ["fire", "flames"], "city": ["city", "streets"]}
PERSONAL_HASHTAG = {"ana": "anadaily", "ben": "benvlog", "cem": "cemshots", "dia": "diadiary",
                    "eli": "eliclips", "fay": "fayfilms"}
CLIPS_PER_TOPIC = 12
# The last clips of each topic have no sound track. A missing modality is a learned vector
# (`items.ItemEncoder`), learnt only from training items that lack it: with every training clip
# sounding, "no audio" stayed at its random init, nothing made the picture rank a topic on its
# own, and a silent or short clip's ranking was whatever the run's rounding left (OMP_NUM_THREADS
# alone flipped it, through the caption PCA's last bits).
SILENT_PER_TOPIC = 2
CLIP_SECONDS, CLIP_SIZE = 1.2, (64, 48)
N_HASHTAGS = sum(map(len, TOPIC_HASHTAGS.values())) + len(PERSONAL_HASHTAG)  # 12
TOP_K = 5  # the two topic hashtags, the personal one, two to spare
USER = "ana"

# Personal hashtags are the fragile part on so few posts: with these settings every assertion
# below held for 15 of the training seeds 0-15, with the model's defaults for 5 of seeds 0-7.
# negative_slope 0.01 leaves many units dead on random-weight features; summed video
# messages (Eq. 6 as printed) give scores of ~1,000 that drown the users' signal.
# The count evidence and item IDs are off here: on 36 clips a user's history counts differ by
# chance as much as the planted content does, and with item IDs the topic ranking flipped in
# some runs. This file tests what recommend does with a model's scores (topic from content,
# personal hashtags, explanations), not the default model's balance of history against
# content, which test_train and the Last.fm bench measure.
MODEL = ModelConfig(NetworkConfig(dim=32, negative_slope=0.2, video_messages="mean"), EvidenceConfig(enabled=False),
                    ItemIdConfig(enabled=False))
TRAINING = TrainConfig(
    epochs=50, batch_size=32, lr=3e-3, l2=0.0, patience=50, device="cpu",
    # With 12 hashtags, one negative a positive rarely pits a user's personal hashtag
    # against another user's; eight do, every step.
    negatives=8,
    # A post has two topic hashtags and one personal one: P@3 peaks only once both are learnt.
    validation_metric="P@3",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_topic_clip(path: Path, topic: str, seed: int, **options) -> Path:
    # Lossless: the same frames every run (x264's lossy output varies), so the same model.
    options = {"tone_hz": TOPIC_TONES[topic], **options}
    return media.write_clip(path, options.pop("seconds", CLIP_SECONDS), pattern=topic,
                            size=CLIP_SIZE, seed=seed, lossless=True, **options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """clips/ (training posts with posts.csv), new/ (one unseen clip a topic), odd/ (bad clips)."""
    root = tmp_path_factory.mktemp("recommend")
    clips, new, odd = root / "clips", root / "new", root / "odd"
    for folder in (clips, new, odd):
        folder.mkdir()
    users = list(PERSONAL_HASHTAG)
    rows = ["video,user,caption,hashtags"]
    for t, topic in enumerate(TOPIC_TONES):
        for k in range(CLIPS_PER_TOPIC):
            name = f"{topic}_{k:02d}.mp4"
            silent = k >= CLIPS_PER_TOPIC - SILENT_PER_TOPIC
            write_topic_clip(clips / name, topic, seed=100 * t + k, **({"tone_hz": None} if silent else {}))
            # Three users a clip, each user on every topic; offsets differ by topic so
            # that no two users always post together.
            posters = [users[(k + t + offset) % len(users)] for offset in (0, 1 + t, 3 + t)]
            for user in posters:
                tags = " ".join(TOPIC_HASHTAGS[topic] + [PERSONAL_HASHTAG[user]])
                rows.append(f"{name},{user},clip {k} of my day,{tags}")
    (clips / "posts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for t, topic in enumerate(TOPIC_TONES):
        write_topic_clip(new / f"{topic}.mp4", topic, seed=1000 + t)
    write_topic_clip(odd / "silent.mp4", "ocean", seed=2000, tone_hz=None)
    write_topic_clip(odd / "short.mp4", "ocean", seed=2001, seconds=0.5)
    media.write_zero_bytes(odd / "empty.mp4")
    return root


@pytest.fixture(scope="module")
def checkpoint(corpus) -> Path:
    store = corpus / "features.h5"
    report = extract(corpus / "clips", store, ExtractOptions(
        device="cpu", workers=0, random_weights=True, sampling=FAST_SAMPLING))
    assert report.statuses["ok"] == len(TOPIC_TONES) * (CLIPS_PER_TOPIC - SILENT_PER_TOPIC)
    assert report.statuses["no_audio"] == len(TOPIC_TONES) * SILENT_PER_TOPIC
    path = corpus / "model.pt"
    train_from_store(store, path, MODEL, TRAINING)
    return path


@pytest.fixture(scope="module")
def recommender(checkpoint) -> Recommender:
    return Recommender(checkpoint, "cpu")


@pytest.fixture
def cli(recommender, checkpoint, monkeypatch):
    """`phr recommend ARGS --checkpoint … --device cpu`, reusing the loaded encoders.

    Loading ResNet50, VGGish and MiniLM again for every invocation would triple the run;
    everything else (checkpoint, store, decoding, output) goes through the command.
    """
    def loaded_encoders(device: torch.device, weights_dir: Path | None, random_weights: bool, precision: str):
        assert random_weights  # the store was built with random weights, so must recommend be
        assert precision == "fp32"  # as the store recorded
        return recommender.encoders

    monkeypatch.setattr("phr_cli.serving.recommend.Encoders", loaded_encoders)
    runner = CliRunner()

    def invoke(*args: str | Path, checkpoint_path: Path = checkpoint):
        return runner.invoke(app, ["recommend", *map(str, args), "--checkpoint", str(checkpoint_path),
                                   "--device", "cpu"])

    return invoke


def ranking(result: ClipRecommendation) -> list[str]:
    return [s.hashtag for s in result.suggestions]


def assert_topic_first(tags: list[str], topic: str) -> None:
    """The topic's hashtags rank above every other topic's (personal ones may come between)."""
    others = [tag for name, names in TOPIC_HASHTAGS.items() if name != topic for tag in names]
    assert max(map(tags.index, TOPIC_HASHTAGS[topic])) < min(map(tags.index, others)), tags


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def fresh_recommender(checkpoint: Path, loaded: Recommender, **options) -> Recommender:
    """Another Recommender on the same checkpoint, sharing the loaded encoders (see `cli`)."""
    other = Recommender(checkpoint, "cpu", **options)
    other.encoders = loaded.encoders
    return other


@pytest.mark.parametrize("topic", list(TOPIC_TONES))
def test_topic_and_personal_hashtags_for_a_known_user(recommender, corpus, topic):
    [result] = recommender.recommend([corpus / "new" / f"{topic}.mp4"], USER, top=N_HASHTAGS)
    assert result.status == "ok" and result.personalised and result.error is None
    tags = ranking(result)
    assert_topic_first(tags, topic)
    assert PERSONAL_HASHTAG[USER] in tags[:TOP_K], tags
    used = set(recommender.checkpoint.provenance.user_hashtags[USER])
    assert all(s.used_before == (s.hashtag in used) for s in result.suggestions)
    assert next(s for s in result.suggestions if s.hashtag == PERSONAL_HASHTAG[USER]).used_before
    assert [s.rank for s in result.suggestions] == list(range(1, len(tags) + 1))
    scores = [s.score for s in result.suggestions]
    assert scores == sorted(scores, reverse=True)


def test_two_users_get_their_own_rankings(recommender, corpus):
    clip = corpus / "new" / "fire.mp4"
    [ana] = recommender.recommend([clip], "ana", top=N_HASHTAGS)
    [ben] = recommender.recommend([clip], "ben", top=N_HASHTAGS)
    assert ranking(ana) != ranking(ben)
    for own, other in ((ana, ben), (ben, ana)):
        personal = PERSONAL_HASHTAG[own.user]
        assert ranking(own).index(personal) < ranking(other).index(personal)


def test_unknown_user_or_none_gets_a_content_based_ranking(recommender, corpus):
    clip = corpus / "new" / "city.mp4"
    [unknown] = recommender.recommend([clip], "zoe", top=N_HASHTAGS)
    [nobody] = recommender.recommend([clip], None, top=N_HASHTAGS)
    for result in (unknown, nobody):
        assert not result.personalised and result.error is None
        assert_topic_first(ranking(result), "city")
        assert not any(s.used_before for s in result.suggestions)
    assert [(s.hashtag, s.score) for s in unknown.suggestions] == \
        [(s.hashtag, s.score) for s in nobody.suggestions]


def test_cli_unknown_user_notice_and_json(cli, corpus):
    result = cli(corpus / "new" / "city.mp4", "--user", "zoe", "--json")
    assert result.exit_code == 0, result.output
    [recommendation] = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert recommendation["personalised"] is False and recommendation["suggestions"]
    notices = [line for line in result.stderr.splitlines() if "content-based ranking" in line]
    assert notices == ["user 'zoe' has no training posts: content-based ranking for an average user"]


def test_cli_table_output(cli, corpus):
    result = cli(corpus / "new" / "ocean.mp4", "--user", USER, "--top", "3")
    assert result.exit_code == 0, result.output
    assert "#ocean" in result.stdout and f"for {USER}" in result.stdout


@pytest.mark.parametrize("name, status", [("silent.mp4", "no_audio"), ("short.mp4", "too_short")])
def test_missing_acoustic_features_still_rank_with_a_notice(recommender, corpus, name, status):
    [result] = recommender.recommend([corpus / "odd" / name], USER, top=N_HASHTAGS)
    assert result.status == status and result.error is None
    assert "ranked without acoustic features" in result.notices
    assert any(notice.startswith(f"{status}: ") for notice in result.notices)
    assert_topic_first(ranking(result), "ocean")  # the picture still tells


def test_caption_hashtags_are_excluded_and_never_embedded(recommender, corpus, monkeypatch):
    embedded: list[list[str]] = []
    textual = recommender.encoders.textual
    original = textual.embed

    def recording(texts: list[str], *args, **kwargs):
        embedded.append(list(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(textual, "embed", recording)
    caption = "Swimming at dawn with friends #Waves #sunrise"
    [result] = recommender.recommend([corpus / "new" / "ocean.mp4"], USER, caption=caption, top=N_HASHTAGS)
    assert embedded == [[caption_without_hashtags(caption)]] == [["Swimming at dawn with friends"]]
    assert "waves" not in ranking(result) and ranking(result)[0] == "ocean"


def test_exclude_used(recommender, corpus):
    used = set(recommender.checkpoint.provenance.user_hashtags[USER])
    clip = corpus / "new" / "ocean.mp4"
    [kept] = recommender.recommend([clip], USER, top=N_HASHTAGS)
    [excluded] = recommender.recommend([clip], USER, top=N_HASHTAGS, exclude_used=True)
    assert {PERSONAL_HASHTAG[USER], *TOPIC_HASHTAGS["ocean"]} <= used
    assert ranking(excluded) == [tag for tag in ranking(kept) if tag not in used]
    assert not any(s.used_before for s in excluded.suggestions)


def test_a_clip_in_the_store_reuses_its_features(recommender, checkpoint, corpus):
    clip = corpus / "clips" / "fire_03.mp4"
    [stored] = recommender.recommend([clip], USER, top=N_HASHTAGS)
    decoder = fresh_recommender(checkpoint, recommender, store_path=corpus / "none.h5")
    [decoded] = decoder.recommend([clip], USER, top=N_HASHTAGS)
    assert stored.status == "stored" and decoded.status == "ok"
    assert stored.notices == [] and decoded.notices == []
    stored_scores = {s.hashtag: s.score for s in stored.suggestions}
    decoded_scores = {s.hashtag: s.score for s in decoded.suggestions}
    assert stored_scores.keys() == decoded_scores.keys()
    assert stored_scores == pytest.approx(decoded_scores, rel=1e-3, abs=1e-3)


def test_a_folder_shares_one_model_load(cli, corpus, monkeypatch):
    import phr_cli.serving.recommend

    loads: list[Path] = []
    original = phr_cli.serving.recommend.load_checkpoint

    def counting_load(path: Path):
        loads.append(path)
        return original(path)

    monkeypatch.setattr(phr_cli.serving.recommend, "load_checkpoint", counting_load)
    result = cli(corpus / "new", "--user", USER, "--json")
    assert result.exit_code == 0, result.output
    recommendations = json.loads(result.stdout)
    assert len(loads) == 1
    assert sorted(Path(r["clip"]).name for r in recommendations) == ["city.mp4", "fire.mp4", "ocean.mp4"]
    assert all(r["suggestions"] and r["error"] is None for r in recommendations)


def test_a_missing_clip_fails_before_anything_loads(cli, corpus, monkeypatch):
    def no_loading(*arguments):
        raise AssertionError("the checkpoint and encoders load only for clips that are there")

    monkeypatch.setattr("phr_cli.serving.recommend.load_checkpoint", no_loading)
    missing = corpus / "odd" / "gone.mp4"
    result = cli(corpus / "new" / "ocean.mp4", missing, corpus / "odd" / "also-gone.mp4", "--user", USER)
    assert result.exit_code == 1 and result.stdout == ""
    assert error_lines(result.stderr) == [f"error: {missing}: no such file (and 1 more clip(s) not found or "
                                          "unreadable)"]


def test_a_missing_clip_with_a_caption_is_ranked_from_the_text(cli, corpus):
    result = cli(corpus / "odd" / "gone.mp4", "--user", USER, "--caption", "Waves at sunrise", "--json")
    assert result.exit_code == 0, result.output
    (recommendation,) = json.loads(result.stdout)
    assert recommendation["suggestions"] and recommendation["error"] is None


def test_a_corrupt_clip_fails_one_line_and_the_others_rank(cli, corpus):
    empty = corpus / "odd" / "empty.mp4"
    result = cli(corpus / "new" / "ocean.mp4", empty, "--user", USER, "--json")
    assert result.exit_code == 1
    by_name = {Path(r["clip"]).name: r for r in json.loads(result.stdout)}
    assert by_name["ocean.mp4"]["suggestions"] and by_name["ocean.mp4"]["error"] is None
    assert not by_name["empty.mp4"]["suggestions"] and "empty.mp4" in by_name["empty.mp4"]["error"]
    [error] = error_lines(result.stderr)
    assert str(empty) in error and "corrupt" in error


def test_a_checkpoint_finds_its_store_beside_it_or_says_it_explains_nothing(cli, checkpoint, corpus, tmp_path,
                                                                              monkeypatch):
    moved = tmp_path / "moved"  # the checkpoint and its store, copied together; the training folder gone
    moved.mkdir()
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert raw["store_relative"] == "features.h5"
    raw["metadata"]["store"] = str(tmp_path / "gone" / "features.h5")
    torch.save(raw, moved / "model.pt")
    shutil.copy(corpus / "features.h5", moved / "features.h5")
    monkeypatch.chdir(tmp_path)
    clip, relative = corpus / "new" / "ocean.mp4", Path("moved/model.pt")

    def explained(result) -> bool:
        assert result.exit_code == 0, result.output
        [recommendation] = json.loads(result.stdout)
        return all(s["because"] for s in recommendation["suggestions"])

    found = cli(clip, "--user", USER, "--json", checkpoint_path=relative)
    assert explained(found) and "warning" not in found.stderr
    (moved / "features.h5").unlink()
    lost = cli(clip, "--user", USER, "--json", checkpoint_path=relative)
    assert not explained(lost)
    warnings = [line for line in lost.stderr.splitlines() if "no explanations" in line]
    assert warnings == [f"warning: no explanations: the store {relative} was trained on is at neither "
                        f"{Path('moved/features.h5')} nor {tmp_path / 'gone' / 'features.h5'}; pass it with --store"]
    assert explained(cli(clip, "--user", USER, "--json", "--store", corpus / "features.h5", checkpoint_path=relative))


def test_missing_and_corrupt_clips_with_a_caption_rank_from_the_text(recommender, corpus):
    missing, empty = corpus / "odd" / "gone.mp4", corpus / "odd" / "empty.mp4"
    results = recommender.recommend([missing, empty], USER, caption="Waves at sunrise #ocean")
    for result, status in zip(results, ("missing", "corrupt")):
        assert result.status == status and result.error is None
        assert result.suggestions and "ocean" not in ranking(result)
        assert any(notice.startswith(f"{status}: ") for notice in result.notices)


def test_encoder_mismatch(recommender, checkpoint, corpus):
    other_weights = copy.deepcopy(recommender.fingerprint)
    other_weights["visual"]["weights"] = "f" * 64

    decoder = fresh_recommender(checkpoint, recommender, store_path=corpus / "none.h5")
    decoder.fingerprint = other_weights
    with pytest.raises(EncoderMismatchError, match=r"the visual encoder here .* differs from the one"):
        decoder.recommend([corpus / "new" / "ocean.mp4"], USER)

    # The training store's features were made by other encoders than the checkpoint says.
    reuser = fresh_recommender(checkpoint, recommender)
    reuser.fingerprint = other_weights
    with pytest.raises(EncoderMismatchError, match="other encoders or frame sampling"):
        reuser.recommend([corpus / "clips" / "ocean_00.mp4"], USER)


def test_cli_encoder_mismatch_is_one_line(cli, checkpoint, corpus):
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    raw["metadata"]["encoders"]["visual"]["weights"] = "f" * 64
    mismatched = corpus / "mismatched.pt"
    torch.save(raw, mismatched)
    result = cli(corpus / "new" / "ocean.mp4", "--user", USER, "--store", corpus / "none.h5",
                 checkpoint_path=mismatched)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    [error] = error_lines(result.stderr)
    assert "the visual encoder here" in error and "Traceback" not in result.output
    assert result.stdout == ""


def test_cli_refuses_a_checkpoint_from_a_store_decoded_otherwise(cli, checkpoint, corpus):
    # A store extracted by an older phr records a frame sampling with other fields.
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    raw["metadata"]["sampling"]["crop"] = 224
    older = corpus / "older-sampling.pt"
    torch.save(raw, older)
    result = cli(corpus / "new" / "ocean.mp4", "--user", USER, checkpoint_path=older)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [error] = error_lines(result.stderr)
    assert f"{older} was trained on a store decoded by another phr version" in error


def test_user_ids_are_normalised_when_looked_up(recommender, corpus):
    clip = corpus / "new" / "fire.mp4"
    [plain] = recommender.recommend([clip], USER, top=N_HASHTAGS)
    [spaced] = recommender.recommend([clip], f" {USER} ", top=N_HASHTAGS)
    assert spaced.personalised and ranking(spaced) == ranking(plain)
    nfd = unicodedata.normalize("NFD", "zoë")
    assert Checkpoint.user_position(SimpleNamespace(users=["ana", "zoë"]), nfd) == 1


def test_cli_unknown_user_gets_the_closest_known_ids(cli, corpus):
    result = cli(corpus / "new" / "city.mp4", "--user", "anna")
    assert result.exit_code == 0, result.output
    notices = [line for line in result.stderr.splitlines() if "content-based ranking" in line]
    assert notices == ["user 'anna' has no training posts (did you mean 'ana'?): content-based ranking "
                       "for an average user"]


def posted_files(corpus: Path, user: str) -> set[str]:
    """The files of `user`'s posts in the training manifest."""
    lines = (corpus / "clips" / "posts.csv").read_text(encoding="utf-8").splitlines()[1:]
    return {video for video, poster, *_ in (line.split(",") for line in lines) if poster == user}


def test_explanations_name_only_the_users_own_videos(cli, corpus):
    """Every clip has three posters, so a hashtag is on videos of others too: ana's reasons
    may name her own files only, and only ones that look like the clip."""
    own, every = posted_files(corpus, USER), {path.name for path in (corpus / "clips").glob("*.mp4")}
    assert every - own  # others posted files she did not
    result = cli(corpus / "new" / "ocean.mp4", "--user", USER, "--top", str(N_HASHTAGS), "--json", "--explain")
    assert result.exit_code == 0, result.output
    [recommendation] = json.loads(result.stdout)
    for suggestion in recommendation["suggestions"]:
        because = suggestion["because"]
        named = [v["video"] for v in because["own_videos"] + because["similar_videos"]]
        assert set(named) <= own, (suggestion["hashtag"], named)
        assert all(v["weight"] > 0 for v in because["similar_videos"])
        words = " ".join(because["sentences"])
        assert not {name for name in every - own if name in words}, words
        assert because["sentences"] and 0 <= because["nearest_with_it"] <= because["nearest"]


def test_cli_explain_prints_each_reason_on_its_own_line(cli, corpus):
    result = cli(corpus / "new" / "ocean.mp4", "--user", USER, "--top", "3", "--explain")
    assert result.exit_code == 0, result.output
    assert "because" in result.stdout and "\\n" not in result.stdout
    for name in ("graph", "factors", "α", "+0%"):  # the engineers' numbers stay in --json
        assert name not in result.stdout
