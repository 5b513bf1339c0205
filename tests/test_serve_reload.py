"""`phr serve`'s hot reload (POST /admin/reload, SIGHUP), clean stop (SIGTERM drains) and --workers.

Two checkpoints of one small store (other seeds: other scores). In process, with a test client:
a swap, a request in flight across a swap, files that cannot replace the serving one. As real
servers (`phr serve` subprocesses): SIGTERM during a request, SIGHUP with two workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from phr_cli.cli import app as cli_app
from phr_cli.files import sha256_of
from phr_cli.serving.options import ServeOptions
from phr_cli.serving.recommend import Recommender
from phr_cli.serving.serve import create_app
from phr_cli.training.checkpoint import load_checkpoint
from support.served import Served, free_port, served_corpus, start_server

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKEN = "s3cret"
AUTHORISED = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    return served_corpus(tmp_path_factory.mktemp("reload"))


@pytest.fixture
def live_checkpoint(served, tmp_path) -> Path:
    """The file the server serves: a copy of the first checkpoint, for the test to replace."""
    return Path(shutil.copy(served.first, tmp_path / "serving.pt"))


def client_for(checkpoint: Path, served: Served, **options) -> TestClient:
    recommender = Recommender(checkpoint, "cpu", store_path=served.store)
    options = {"decode_workers": 0, "token": TOKEN, **options}
    return TestClient(create_app(recommender, ServeOptions(**options), checkpoint), headers=AUTHORISED)


def move_into_place(source: Path, checkpoint: Path) -> None:
    """As a deployment would: a copy beside the file, renamed over it."""
    staged = checkpoint.with_suffix(".new")
    shutil.copy(source, staged)
    os.replace(staged, checkpoint)


def scores(response: httpx.Response) -> dict[str, float]:
    assert response.status_code == 200, response.text
    return {s["hashtag"]: s["score"] for s in response.json()["suggestions"]}


def ask(client: TestClient, clip: Path) -> httpx.Response:
    return client.post("/recommend", data={"user": "ana", "top": "20"},
                       files={"clip": (clip.name, clip.read_bytes(), "video/mp4")})


def test_reload_swaps_the_model_and_health_names_it(served, live_checkpoint):
    with client_for(live_checkpoint, served) as client:
        assert client.get("/health").json()["checkpoint_sha256"] == sha256_of(served.first)
        before = scores(ask(client, served.stored_clip))
        move_into_place(served.second, live_checkpoint)
        reloaded = client.post("/admin/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["checkpoint_sha256"] == sha256_of(served.second)
        assert reloaded.json()["previous_sha256"] == sha256_of(served.first) and reloaded.json()["changed"]
        assert client.get("/health").json()["checkpoint_sha256"] == sha256_of(served.second)
        after = scores(ask(client, served.stored_clip))
        assert after != before
        assert client.post("/admin/reload").json()["changed"] is False  # the same file: nothing to swap


def test_a_request_in_flight_finishes_on_the_model_it_started_with(served, live_checkpoint, monkeypatch):
    expected = Recommender(served.first, "cpu", store_path=served.store).recommend(
        [served.stored_clip], "ana", top=20)[0]
    waiting, release = threading.Event(), threading.Event()
    original = Recommender.look_up

    def look_up(self, clip, caption=""):
        if not release.is_set():
            waiting.set()
            release.wait()
        return original(self, clip, caption)

    monkeypatch.setattr(Recommender, "look_up", look_up)
    with client_for(live_checkpoint, served) as client:
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(target=lambda: answers.append(ask(client, served.stored_clip)))
        in_flight.start()
        waiting.wait()
        move_into_place(served.second, live_checkpoint)
        assert client.post("/admin/reload").status_code == 200
        release.set()
        in_flight.join()
        assert scores(answers[0]) == pytest.approx({s.hashtag: s.score for s in expected.suggestions}, rel=1e-5)
        assert scores(ask(client, served.stored_clip)) != scores(answers[0])  # later requests: the new model


def test_a_file_that_cannot_serve_leaves_the_old_model_serving(served, live_checkpoint, tmp_path):
    other_encoders = load_checkpoint(served.second)
    other_encoders.provenance.encoders["visual"]["weights"] = "0" * 64
    other_encoders.save(tmp_path / "other-encoders.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with client_for(live_checkpoint, served) as client:
        before = scores(ask(client, served.stored_clip))
        for broken, reason in ((garbage, "not a readable phr checkpoint"), (tmp_path / "other-encoders.pt",
                                                                             "other visual encoders")):
            move_into_place(broken, live_checkpoint)
            refused = client.post("/admin/reload")
            assert refused.status_code == 409 and reason in refused.json()["error"], refused.text
            assert "\n" not in refused.json()["error"] and str(live_checkpoint) in refused.json()["error"]
            assert client.get("/health").json()["checkpoint_sha256"] == sha256_of(served.first)
            assert scores(ask(client, served.stored_clip)) == before
        live_checkpoint.unlink()
        gone = client.post("/admin/reload")
        assert gone.status_code == 409 and "cannot read it" in gone.json()["error"]
        metrics = client.get("/metrics").text
    reloads = {s.labels["outcome"]: s.value for family in text_string_to_metric_families(metrics)
               for s in family.samples if s.name == "phr_model_reloads_total"}
    assert reloads == {"refused": 3}


def test_metrics_of_the_served_model(served, live_checkpoint):
    with client_for(live_checkpoint, served) as client:
        assert ask(client, served.new_clip).status_code == 200  # decoded and encoded: every stage runs
        exposition = client.get("/metrics")
    assert exposition.headers["content-type"].startswith("text/plain")
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(exposition.text) for s in family.samples}
    assert found["phr_http_requests_total", (("method", "POST"), ("route", "/recommend"), ("status", "200"))] == 1
    for stage in ("decode", "encode", "score", "explain"):
        assert found["phr_recommend_stage_seconds_count", (("stage", stage),)] == 1
        assert found["phr_recommend_stage_seconds_sum", (("stage", stage),)] > 0
    assert found["phr_encode_queue_depth", ()] == 0
    assert found["phr_model_info", (("sha256", sha256_of(served.first)),)] == 1
    assert found["phr_model_loaded_timestamp_seconds", ()] > 0


def test_reload_over_http_needs_the_token(served, live_checkpoint):
    with client_for(live_checkpoint, served, token=None) as client:
        refused = client.post("/admin/reload")
        assert refused.status_code == 403 and "--token" in refused.json()["error"]
    with client_for(live_checkpoint, served) as client:
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize(("option", "value"), [("--drain-timeout", "nan"), ("--drain-timeout", "-1"),
                                               ("--workers", "0"), ("--log-format", "xml")])
def test_cli_refuses_bad_lifecycle_options(served, option, value):
    result = CliRunner().invoke(cli_app, ["serve", "--checkpoint", str(served.first), option, value])
    assert result.exit_code == 2 and option in result.stderr


def test_sigterm_answers_the_request_in_flight_then_exits_0(served, tmp_path):
    """A real server: a request whose upload is half sent when SIGTERM comes is still answered."""
    port = free_port()
    log = tmp_path / "serve.log"
    server = start_server(served.first, served.store, port, "--log-format", "json", "--drain-timeout", "60", log=log)
    try:
        body, boundary = multipart(served.stored_clip)
        half = len(body) // 2
        with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
            connection.sendall(f"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                               f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
                               + body[:half])
            wait_for_requests_in_progress(port, 2)  # this one and the /metrics request asking
            server.send_signal(signal.SIGTERM)
            wait_for_log(log, "Shutting down")
            connection.sendall(body[half:])
            answer = read_http_response(connection)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["suggestions"]
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    [request] = [line for line in lines if line["logger"] == "phr.serve" and "status" in line]
    assert request["status"] == 200 and {"decode_ms", "encode_ms", "score_ms", "explain_ms"} <= set(request)


def test_sighup_reloads_every_worker(served, live_checkpoint, tmp_path):
    """Two worker processes: SIGHUP to the supervisor swaps both; requests meanwhile all succeed."""
    port = free_port()
    log = tmp_path / "serve.log"
    server = start_server(live_checkpoint, served.store, port, "--workers", "2", log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_models(base, {sha256_of(served.first)}, server, log)  # both workers up
        move_into_place(served.second, live_checkpoint)
        server.send_signal(signal.SIGHUP)
        statuses = []
        with httpx.Client(base_url=base, timeout=120) as client:
            def ask_once() -> None:
                statuses.append(client.post("/recommend", data={"user": "ana"}, files={
                    "clip": (served.stored_clip.name, served.stored_clip.read_bytes())}).status_code)

            wait_for_models(base, {sha256_of(served.second)}, server, log, meanwhile=ask_once)
        assert statuses and set(statuses) == {200}
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()


def wait_for_models(base: str, shas: set[str], server, log: Path, meanwhile=lambda: None) -> None:
    """Until both workers serve the checkpoints `shas` (phr_model_info at 1, one series per worker)."""
    deadline = time.monotonic() + WAIT
    while True:
        meanwhile()
        text = httpx.get(f"{base}/metrics", timeout=30).text
        serving = [s for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "phr_model_info" and s.value == 1]
        if len(serving) == 2 and {s.labels["sha256"] for s in serving} == shas:
            return
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def multipart(clip: Path) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/recommend", data={"user": "ana"},
                            files={"clip": (clip.name, clip.read_bytes(), "video/mp4")})
    boundary = request.headers["content-type"].split("boundary=")[1]
    return request.read(), boundary


WAIT = 300  # seconds before a wait counts as a failure (something that never comes, not a speed limit)


def wait_for_requests_in_progress(port: int, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        [family] = [f for f in text_string_to_metric_families(text) if f.name == "phr_http_requests_in_progress"]
        if family.samples[0].value >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {count} requests in progress")


def wait_for_log(log: Path, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{log.read_text()}"
        time.sleep(0.05)


def read_http_response(connection: socket.socket) -> bytes:
    """The whole answer (the server closes the connection after it: it is shutting down)."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received
