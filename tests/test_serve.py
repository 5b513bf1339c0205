"""`phr serve` and the explanations (`because`): a small trained corpus with a planted cause.

Three topics (colour, motion and sound differ), three users. The planted cause: only ana
uses #bonfire, on three videos of three topics, one of them fire_00; a new clip that is a
near-duplicate of fire_00 (the same frames, audio with a little noise) must be explained
by fire_00: among ana's own #bonfire videos and first among the training videos most
similar to the clip that carry #bonfire.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import fields
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import FAST_SAMPLING
from phr_cli.cli import app as cli_app
from phr_cli.data.cases import build_cases
from phr_cli.data.dataset import Dataset
from phr_cli.data.graph import posts_from_store
from phr_cli.data.store import load_store
from phr_cli.errors import ConfigError, PhrError
from phr_cli.extract import ExtractOptions, extract
from phr_cli.files import sha256_of
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.ranking.rerank import RERANKER_PART, CountsOfTraining, Reranker, candidate_table, fit_trees
from phr_cli.serving import schema
from phr_cli.serving.explain import Because, Part, VideoEvidence
from phr_cli.serving.options import ServeOptions
from phr_cli.serving.recommend import ClipRecommendation, Recommender, Suggestion
from phr_cli.serving.schema import Recommendation
from phr_cli.serving.serve import create_app
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support import media

TONES = {"ocean": 220.0, "fire": 880.0, "city": 2000.0}
USERS = ("ana", "ben", "cem")
CLIPS_PER_TOPIC = 4
PLANTED = "bonfire"
PLANTED_VIDEOS = ("fire_00.mp4", "ocean_01.mp4", "city_02.mp4")
SECONDS, SIZE = 1.2, (64, 48)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def topic_clip(path: Path, topic: str, seed: int, **options) -> Path:
    return media.write_clip(path, options.pop("seconds", SECONDS), pattern=topic, size=SIZE, seed=seed,
                            tone_hz=TONES[topic], **options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # Once a session: test_serve_contract.py serves the same corpus and checkpoint.
    root = tmp_path_factory.getbasetemp() / "serve"
    if (root / "new" / "notes.mp4").exists():  # the last file written
        return root
    root.mkdir()
    clips, new = root / "clips", root / "new"
    clips.mkdir()
    new.mkdir()
    rows = ["video,user,caption,hashtags"]
    for t, topic in enumerate(TONES):
        for k in range(CLIPS_PER_TOPIC):
            name = f"{topic}_{k:02d}.mp4"
            topic_clip(clips / name, topic, seed=100 * t + k)
            for user in (USERS[k % 3], USERS[(k + 1) % 3]):
                tags = [topic, f"{user}daily"] + ([PLANTED] if user == "ana" and name in PLANTED_VIDEOS else [])
                rows.append(f"{name},{user},clip {k},{' '.join(tags)}")
    (clips / "posts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    topic_clip(new / "fire_00 again.mp4", "fire", seed=200, noise=0.02)  # fire_00's frames: t=1, k=0
    topic_clip(new / "city.mp4", "city", seed=999)
    media.write_text_file(new / "notes.mp4")
    return root


@pytest.fixture(scope="module")
def checkpoint(corpus) -> Path:
    path = corpus / "model.pt"
    if path.exists():  # trained for another module this session
        return path
    store = corpus / "features.h5"
    extract(corpus / "clips", store, ExtractOptions(device="cpu", workers=0, random_weights=True,
                                                     sampling=FAST_SAMPLING))
    train_from_store(store, path, ModelConfig(NetworkConfig(dim=16)),
                     TrainConfig(epochs=5, batch_size=16, device="cpu"))
    return path


@pytest.fixture(scope="module")
def recommender(checkpoint) -> Recommender:
    return Recommender(checkpoint, "cpu")


def client_for(recommender: Recommender, checkpoint: Path, **options) -> TestClient:
    return TestClient(create_app(recommender, ServeOptions(**{"decode_workers": 0, **options}), checkpoint))


def wait_until_ready(client: TestClient) -> httpx.Response:
    """/health/ready once the encoders are in: it answers 503 ("loading") until then."""
    while (response := client.get("/health/ready")).json()["status"] == "loading":
        time.sleep(0.05)
    return response


def upload(client: TestClient, clip: Path, user: str | None = "ana", **fields) -> httpx.Response:
    data = {"user": user, **fields} if user else fields
    with open(clip, "rb") as handle:
        return client.post("/recommend", data=data, files={"clip": (clip.name, handle, "video/mp4")})


def training_posts(checkpoint: Path, corpus: Path, user: str, hashtag: str) -> list[str]:
    """The videos of `user`'s training posts with `hashtag` (the split is the checkpoint's)."""
    posts = posts_from_store(load_store(corpus / "features.h5"))
    train = load_checkpoint(checkpoint).split.train
    table = load_store(corpus / "features.h5").posts
    return [table.path[posts.store_rows[r]] for r in train
            if posts.posts.users[r] == user and hashtag in posts.posts.hashtags[r]]


def planted_reason(result: ClipRecommendation):
    return next(s for s in result.suggestions if s.hashtag == PLANTED).because


def test_explanation_names_the_planted_near_duplicate(recommender, checkpoint, corpus):
    n_hashtags = len(recommender.checkpoint.hashtags)
    [result] = recommender.recommend([corpus / "new" / "fire_00 again.mp4"], "ana", top=n_hashtags, explain=True)
    assert result.error is None and result.status == "ok"
    trained_on = training_posts(checkpoint, corpus, "ana", PLANTED)
    assert "fire_00.mp4" in trained_on and len(trained_on) > 1  # the planted cause made it into training
    because = planted_reason(result)
    assert because.uses == len(trained_on)
    assert {v.video for v in because.own_videos} == set(trained_on)
    assert sum(v.weight for v in because.own_videos) == pytest.approx(1.0, abs=1e-5)  # α over V_{ana,bonfire}
    assert because.similar_videos[0].video == "fire_00.mp4"
    first, *rest = [v.weight for v in because.similar_videos]  # hers, the near-duplicate first
    assert all(0 < weight < first for weight in rest)
    for suggestion in result.suggestions:  # the parts add up to the score, the shares to 1 in magnitude
        parts = suggestion.because.parts
        assert sum(p.value for p in parts) == pytest.approx(suggestion.score, rel=1e-4, abs=1e-5)
        assert sum(abs(p.share) for p in parts) == pytest.approx(1.0)


def test_unknown_user_gets_reasons_without_own_videos(recommender, corpus):
    [result] = recommender.recommend([corpus / "new" / "fire_00 again.mp4"], "zoe", top=3, explain=True)
    assert not result.personalised
    for suggestion in result.suggestions:
        because = suggestion.because
        assert because.uses == 0 and because.own_videos == [] and because.similar_videos == []  # nothing of theirs
        assert because.sentences and because.nearest > 0


def test_cli_explain_table_names_the_cause(recommender, checkpoint, corpus, monkeypatch):
    clip = corpus / "new" / "fire_00 again.mp4"
    monkeypatch.setattr("phr_cli.serving.recommend.Encoders", lambda *args: recommender.encoders)
    result = CliRunner().invoke(cli_app, [
        "recommend", str(clip), "--user", "ana", "--top", "20", "--explain",
        "--checkpoint", str(checkpoint), "--device", "cpu"], env={"COLUMNS": "400"})  # no wrapped cells
    assert result.exit_code == 0, result.output
    [expected] = recommender.recommend([clip], "ana", top=20, explain=True)
    said = planted_reason(expected).sentences
    assert any(f"#{PLANTED}" in sentence or "fire_00.mp4" in sentence for sentence in said), said
    assert "because" in result.stdout and all(sentence in result.stdout for sentence in said)


def test_upload_answers_one_recommend_json_element(recommender, checkpoint, corpus):
    with client_for(recommender, checkpoint) as client:
        response = upload(client, corpus / "new" / "fire_00 again.mp4", top="20", caption="camp #fire")
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = recommender.recommend([corpus / "new" / "fire_00 again.mp4"], "ana", "camp #fire", top=20,
                                     explain=True)[0].to_dict()
    assert set(answer) == set(expected) | {"duration"}
    assert answer["clip"] == "fire_00 again.mp4" and answer["personalised"] is True
    assert [s["hashtag"] for s in answer["suggestions"]] == [s["hashtag"] for s in expected["suggestions"]]
    assert "fire" not in [s["hashtag"] for s in answer["suggestions"]]  # in the caption already
    planted = next(s for s in answer["suggestions"] if s["hashtag"] == PLANTED)["because"]
    assert planted["similar_videos"][0]["video"] == "fire_00.mp4"
    assert {"decode", "encode", "score"} <= {part.split(";")[0] for part in
                                              response.headers["server-timing"].split(", ")}


def test_uploads_are_deleted_after_the_answer(recommender, checkpoint, corpus, monkeypatch):
    folders = []
    original = Recommender.look_up

    def look_up(self, clip, caption=""):
        folders.append(Path(clip).parent)
        assert Path(clip).is_file()
        return original(self, clip, caption)

    monkeypatch.setattr(Recommender, "look_up", look_up)
    with client_for(recommender, checkpoint) as client:
        assert upload(client, corpus / "new" / "city.mp4").status_code == 200
        [folder] = folders
        assert oct(folder.stat().st_mode & 0o777) == "0o700" and list(folder.iterdir()) == []
    assert not folder.exists()  # the private folder goes with the server


def test_bad_inputs_get_one_line_4xx_and_the_server_keeps_serving(recommender, checkpoint, corpus):
    with client_for(recommender, checkpoint, max_upload_bytes=50_000) as client:
        not_media = upload(client, corpus / "new" / "notes.mp4")
        assert not_media.status_code == 422 and not_media.json()["status"] == "corrupt"
        assert "\n" not in not_media.json()["error"]
        # Named as the client sent it, never by the server's temporary file.
        assert not_media.json()["error"].startswith("notes.mp4: ") and "phr-serve" not in not_media.text
        assert Recommendation.model_validate(not_media.json()).error  # the schema's 422 answer
        missing_user = upload(client, corpus / "new" / "city.mp4", user=None)
        assert missing_user.status_code == 422 and "user" in missing_user.json()["error"]
        no_clip = client.post("/recommend", data={"user": "ana"}, files={"other": ("x", b"x")})
        assert no_clip.status_code == 422 and "clip" in no_clip.json()["error"]
        big = corpus / "big.mp4"
        big.write_bytes(b"\0" * 60_000)
        too_large = upload(client, big)
        assert too_large.status_code == 413 and "limit" in too_large.json()["error"]
        assert client.post("/recommend", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
        for body in ({"path": "city.mp4", "user": ""}, {"path": "city.mp4", "user": "ana", "top": "5"},
                     {"path": "city.mp4", "user": "ana", "top": 0}, {"path": "", "user": "ana"}):
            refused = client.post("/recommend", json=body)  # JSON is checked strictly, as the schema says
            assert refused.status_code == 422 and set(refused.json()) == {"error"}, body
        assert client.get("/health").status_code == 200
        assert upload(client, corpus / "new" / "city.mp4").status_code == 200


def test_paths_only_under_the_media_root(recommender, checkpoint, corpus, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    media.copy_clip(corpus / "new" / "city.mp4", root / "city.mp4")
    (root / "escape.mp4").symlink_to(corpus / "new" / "city.mp4")
    (root / "inside.mp4").symlink_to(root / "city.mp4")
    with client_for(recommender, checkpoint) as client:
        assert client.post("/recommend", json={"path": "city.mp4", "user": "ana"}).status_code == 403  # no root
    with client_for(recommender, checkpoint, media_root=root) as client:
        def ask(path: str) -> httpx.Response:
            return client.post("/recommend", json={"path": path, "user": "ana"})

        assert ask("city.mp4").status_code == 200 and ask("city.mp4").json()["clip"] == "city.mp4"
        assert ask("inside.mp4").status_code == 200  # a link that stays inside
        for outside in (os.path.relpath(corpus / "new" / "city.mp4", root), str(corpus / "new" / "city.mp4"),
                        "escape.mp4"):
            response = ask(outside)
            assert response.status_code == 403 and "outside the media root" in response.json()["error"], outside
        assert ask("gone.mp4").status_code == 404


def test_token_is_required_beyond_loopback_and_checked(recommender, checkpoint, corpus):
    with pytest.raises(ConfigError, match="token"):
        ServeOptions(host="0.0.0.0")
    ServeOptions(host="::1")
    for unusable in ("", " ", " s3cret"):
        with pytest.raises(ConfigError, match="--token"):
            ServeOptions(token=unusable)
    with client_for(recommender, checkpoint, token="s3cret") as client:
        assert client.get("/health/live").status_code == 200  # a load balancer's probe carries no token
        for route in ("/health", "/health/ready", "/users/ana"):
            assert client.get(route).status_code == 401, route
        assert client.get("/health/ready", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/health/ready", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert upload(client, corpus / "new" / "city.mp4").status_code == 401
        for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme's name in any case (RFC 9110)
            client.headers["Authorization"] = f"{scheme} s3cret"
            assert wait_until_ready(client).status_code == 200, scheme
        assert upload(client, corpus / "new" / "city.mp4").status_code == 200
    assert client.app.openapi()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_cli_refuses_a_public_address_without_a_token(checkpoint, monkeypatch):
    monkeypatch.delenv("PHR_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "needs a token" in result.stderr


def test_cli_refuses_a_blank_token(checkpoint, monkeypatch):
    monkeypatch.delenv("PHR_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--checkpoint", str(checkpoint), "--token", " "])
    assert result.exit_code == 2 and "--token" in result.stderr and "blank" in result.stderr


def test_health_and_users(recommender, checkpoint, corpus):
    with client_for(recommender, checkpoint) as client:
        health = wait_until_ready(client).json()
        assert health["status"] == "ready" and health["explanations"] == "available"
        assert health["provenance"]["posts_fingerprint"] == recommender.checkpoint.provenance.posts_fingerprint
        assert health["checkpoint_sha256"] == sha256_of(checkpoint)
        # TestClient's client is "testclient", not loopback: no server paths.
        assert health["checkpoint"] is None and health["store"] is None and health["provenance"]["store"] is None
        assert str(corpus) not in client.get("/health").text  # /health: an alias of /health/ready
        ana = client.get("/users/ana").json()
        counts = {entry["hashtag"]: entry["count"] for entry in ana["hashtags"]}
        assert ana["known"] and counts[PLANTED] == len(training_posts(checkpoint, corpus, "ana", PLANTED))
        assert counts["anadaily"] >= counts[PLANTED]
        assert client.get("/users/zoe").json() == {"user": "zoe", "known": False, "hashtags": []}
    app = create_app(recommender, ServeOptions(decode_workers=0), checkpoint)
    with TestClient(app, client=("127.0.0.1", 50000)) as local:
        health = wait_until_ready(local).json()
        assert health["checkpoint"] == str(checkpoint) and health["store"] == str(corpus / "features.h5")


def test_one_clip_and_one_user_per_request(recommender, checkpoint, corpus):
    clips = [corpus / "new" / "city.mp4", corpus / "new" / "fire_00 again.mp4"]
    with client_for(recommender, checkpoint) as client:
        two_clips = client.post("/recommend", data={"user": "ana"},
                                files=[("clip", (clip.name, clip.read_bytes())) for clip in clips])
        assert two_clips.status_code == 422 and two_clips.json()["error"].startswith("clip: given more than once")
        with open(clips[0], "rb") as handle:
            two_users = client.post("/recommend", data={"user": ["ana", "ben"]}, files={"clip": ("c.mp4", handle)})
        assert two_users.status_code == 422 and two_users.json()["error"].startswith("user: given more than once")
        blank = upload(client, clips[0], user=" ")  # schema-valid: an unknown user, answered for an average one
        assert blank.status_code == 200 and blank.json()["user"] is None and not blank.json()["personalised"]


class GatedEncoders:
    """The recommender's encoders, the text encoder held back until `gate` is set (or failing)."""

    def __init__(self, loaded, gate: threading.Event, failure: Exception | None = None) -> None:
        self.loaded, self.gate, self.failure = loaded, gate, failure
        self.visual, self.acoustic = loaded.visual, loaded.acoustic

    @property
    def textual(self):
        self.gate.wait(timeout=120)
        if self.failure is not None:
            raise self.failure
        return self.loaded.textual


def test_ready_only_once_every_encoder_is_loaded(recommender, checkpoint, monkeypatch):
    gate = threading.Event()
    monkeypatch.setattr(recommender, "encoders", GatedEncoders(recommender.encoders, gate))
    with client_for(recommender, checkpoint) as client:
        try:
            assert client.get("/health/live").status_code == 200
            loading = client.get("/health/ready")
            assert loading.status_code == 503 and loading.json()["status"] == "loading"
        finally:
            gate.set()
        assert wait_until_ready(client).status_code == 200
    gate = threading.Event()
    gate.set()
    failing = GatedEncoders(recommender.encoders, gate, PhrError("the text encoder is missing"))
    monkeypatch.setattr(recommender, "encoders", failing)
    with client_for(recommender, checkpoint) as client:
        failed = wait_until_ready(client)
        assert failed.status_code == 503 and failed.json()["status"] == "failed"


def test_each_request_is_logged_with_its_user_client_and_reason(recommender, checkpoint, corpus, caplog):
    caplog.set_level(logging.INFO, logger="phr.serve")
    with client_for(recommender, checkpoint, token="s3cret") as client:
        client.get("/users/ana")
        client.headers["Authorization"] = "Bearer s3cret"
        upload(client, corpus / "new" / "city.mp4", user="ben\nforged line")
        client.post("/recommend", json={"path": "city.mp4", "user": "cem"})
    lines = [record.getMessage() for record in caplog.records if record.name == "phr.serve"]
    assert any(line.startswith("401 refused GET /users/ana user - client testclient: 'missing or wrong bearer")
               for line in lines), lines
    assert any(line.startswith("200 ok POST /recommend user 'ben\\nforged line' client testclient")
               for line in lines), lines  # quoted: a user cannot forge a log line
    assert any(line.startswith("403 refused POST /recommend user 'cem' client testclient: 'paths are not served")
               for line in lines), lines


def test_docs_are_served_without_a_cdn(recommender, checkpoint):
    with client_for(recommender, checkpoint, token="s3cret") as client:  # the documents need no token
        page = client.get("/docs")
        assert page.status_code == 200 and "cdn" not in page.text
        script = re.search(r'src="([^"]+swagger-ui-bundle\.js)"', page.text).group(1)
        assert client.get(script).status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_schema_names_every_field_the_answers_have():
    """schema.py's models mirror recommend.py's and explain.py's dataclasses: a field renamed there fails here."""
    assert set(schema.Recommendation.model_fields) == {f.name for f in fields(ClipRecommendation)} | {"duration"}
    assert set(schema.Suggestion.model_fields) == {f.name for f in fields(Suggestion)}
    assert set(schema.Because.model_fields) == {f.name for f in fields(Because)}
    assert set(schema.Part.model_fields) == {f.name for f in fields(Part)}
    assert set(schema.VideoEvidence.model_fields) == {f.name for f in fields(VideoEvidence)}


def test_a_clip_that_times_out_in_decoding_gets_422(recommender, checkpoint, corpus):
    long_clip = topic_clip(corpus / "long.mp4", "ocean", seed=5, seconds=20.0)
    options = {"decode_workers": 1, "file_timeout": 0.001}
    with client_for(recommender, checkpoint, **options) as client:
        response = upload(client, long_clip)
        assert response.status_code == 422 and response.json()["status"] == "timed_out"
        assert client.get("/health").status_code == 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_concurrent_uploads_under_uvicorn_share_batches(recommender, checkpoint, corpus, monkeypatch):
    batches: list[int] = []
    original = Recommender.encode

    def encode(self, clips):
        batches.append(len(clips))
        return original(self, clips)

    monkeypatch.setattr(Recommender, "encode", encode)
    port = free_port()
    options = ServeOptions(port=port, decode_workers=2, batch_window=0.3)
    server = uvicorn.Server(uvicorn.Config(create_app(recommender, options, checkpoint), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        clips = [corpus / "new" / "city.mp4", corpus / "new" / "fire_00 again.mp4"]

        async def load() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                async def one(i: int) -> httpx.Response:
                    clip = corpus / "new" / "notes.mp4" if i == 16 else clips[i % 2]
                    return await client.post("/recommend", data={"user": USERS[i % 3]},
                                             files={"clip": (clip.name, clip.read_bytes())})
                responses = await asyncio.gather(*(one(i) for i in range(32)))
                responses.append(await client.get("/health"))
                return responses

        responses = asyncio.run(load())
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert [r.status_code for r in responses[:32]] == [422 if i == 16 else 200 for i in range(32)]
    assert all(r.json()["suggestions"] for i, r in enumerate(responses[:32]) if i != 16)
    assert responses[32].status_code == 200
    assert sum(batches) == 32 and max(batches) > 1  # clips that arrived together shared a batch
    assert json.loads(responses[0].text)["clip"] == "city.mp4"


def test_with_a_reranker_the_explained_parts_still_add_up_to_the_score(recommender, corpus):
    data = Dataset.from_store(corpus / "features.h5", "post", 0)  # the checkpoint's split
    cases = build_cases(data.posts, np.arange(len(data.posts)), data.graph)
    counts = CountsOfTraining.of_graph(data.graph)
    table = candidate_table(recommender.scorer, data.posts, cases, counts)
    recommender.scorer.reranker = Reranker(fit_trees(table.features, table.hits, seed=0).model_to_string(),
                                           table.names, counts)
    try:
        [result] = recommender.recommend([corpus / "new" / "fire_00 again.mp4"], "ana", top=3, explain=True)
    finally:
        recommender.scorer.reranker = None  # the fixture is shared
    for suggestion in result.suggestions:
        parts = suggestion.because.parts
        assert RERANKER_PART in {p.name for p in parts}
        assert sum(p.value for p in parts) == pytest.approx(suggestion.score, rel=1e-4, abs=1e-4)
        assert sum(abs(p.share) for p in parts) == pytest.approx(1.0)
