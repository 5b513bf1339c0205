"""POST /posts (serving/history.py): a published post is recorded durably, counted once,
in the user's history from the next request on, and replayed by a server started later."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_serve import checkpoint, corpus, upload, wait_until_ready  # noqa: F401 (the trained corpus's fixtures)

from phr_cli.data.journal import SQLiteJournal
from phr_cli.serving.options import ServeOptions
from phr_cli.serving.recommend import Recommender
from phr_cli.serving.serve import create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def serving(trained: Path, journal: Path | str, **options) -> TestClient:
    """A server of its own (posts change its model) recording into `journal`."""
    recommender = Recommender(trained, "cpu")
    return TestClient(create_app(recommender, ServeOptions(decode_workers=0, journal=str(journal), **options),
                                 trained))


def post(client: TestClient, clip: Path, **fields) -> object:
    with open(clip, "rb") as handle:
        return client.post("/posts", data=fields, files={"clip": (clip.name, handle, "video/mp4")})


def test_a_post_counts_from_the_next_request_on_once_and_after_a_restart(checkpoint, corpus, tmp_path):  # noqa: F811
    clip, journal = corpus / "new" / "city.mp4", tmp_path / "journal.db"
    with serving(checkpoint, journal) as client:
        wait_until_ready(client)
        assert client.get("/users/zoe").json() == {"user": "zoe", "known": False, "hashtags": []}
        first = post(client, clip, user="zoe", hashtags="#Sunset, city", id="p1")
        assert first.status_code == 201, first.text
        assert first.json() == {"id": "p1", "sequence": 1, "new": True, "user": "zoe", "hashtags": ["sunset", "city"]}
        again = post(client, clip, user="zoe", hashtags="#Sunset, city", id="p1")
        assert again.status_code == 201 and again.json()["new"] is False and again.json()["sequence"] == 1
        assert post(client, clip, user="zoe", hashtags="sunset", id="p2").status_code == 201
        counts = {h["hashtag"]: h["count"] for h in client.get("/users/zoe").json()["hashtags"]}
        assert counts == {"sunset": 2, "city": 1}
        samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in
                   text_string_to_metric_families(client.get("/metrics").text) for sample in family.samples}
        assert samples["phr_posts_total", (("outcome", "new"),)] == 2
        assert samples["phr_posts_total", (("outcome", "repeated"),)] == 1
        assert samples["phr_post_record_seconds_count", ()] == 3
        # A hashtag no training post had is a candidate from its first use on, and zoe's own habit comes first.
        answer = upload(client, clip, user="zoe", top=3).json()
        assert answer["personalised"] is True
        first_suggestion = answer["suggestions"][0]
        assert first_suggestion["hashtag"] == "sunset" and first_suggestion["used_before"] is True
        assert first_suggestion["because"]["uses"] == 2
        assert "sunset" not in [s["hashtag"] for s in upload(client, clip, user="ana", top=3).json()["suggestions"]]
    assert [p.id for _, p in SQLiteJournal(journal).read()] == ["p1", "p2"]
    with serving(checkpoint, journal) as restarted:  # a new process: the journal is replayed on start
        wait_until_ready(restarted)
        counts = {h["hashtag"]: h["count"] for h in restarted.get("/users/zoe").json()["hashtags"]}
        assert counts == {"sunset": 2, "city": 1}


def test_a_post_needs_hashtags_and_content(checkpoint, corpus, tmp_path):  # noqa: F811
    with serving(checkpoint, tmp_path / "journal.db") as client:
        wait_until_ready(client)
        missing = post(client, corpus / "new" / "city.mp4", user="zoe")
        assert missing.status_code == 422 and "hashtags" in missing.json()["error"]
        blank = post(client, corpus / "new" / "city.mp4", user="zoe", hashtags=" , ")
        assert blank.status_code == 422 and "hashtags" in blank.json()["error"]
        not_video = post(client, corpus / "new" / "notes.mp4", user="zoe", hashtags="x")
        assert not_video.status_code == 422 and not_video.json()["error"].startswith("notes.mp4: ")
        bad_time = post(client, corpus / "new" / "city.mp4", user="zoe", hashtags="x", time="yesterday")
        assert bad_time.status_code == 422 and bad_time.json()["error"].startswith("time: ")
        assert client.get("/users/zoe").json()["known"] is False


def test_two_replicas_sharing_a_postgresql_journal_follow_each_other(checkpoint, corpus, postgres_url):  # noqa: F811
    clip = corpus / "new" / "city.mp4"
    with serving(checkpoint, postgres_url) as first, serving(checkpoint, postgres_url) as second:
        wait_until_ready(first)
        wait_until_ready(second)
        assert post(first, clip, user="yan", hashtags="dusk", id="r1").status_code == 201
        assert post(second, clip, user="yan", hashtags="dusk", id="r2").status_code == 201
        assert post(second, clip, user="yan", hashtags="dusk", id="r1").json()["new"] is False  # sent to both
        for replica in (first, second):
            deadline = time.monotonic() + 60  # a generous bound: the latency is bench/serve_posts.py's to measure
            while (counts := {h["hashtag"]: h["count"] for h in replica.get("/users/yan").json()["hashtags"]}) \
                    != {"dusk": 2} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert counts == {"dusk": 2}
