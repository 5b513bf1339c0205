"""`phr serve`'s Prometheus metrics and JSON log lines, on small apps of their own (the served
model's own series are checked in tests/test_serve_reload.py, which has a trained checkpoint)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import multiprocessing
import subprocess
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from phr_cli.serving import metrics as metrics_module
from phr_cli.serving.logs import LogFormat, logging_config
from phr_cli.serving.metrics import RequestMetrics, ServeMetrics


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text exposition by (name, labels); parsing it is the format check."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def small_app(metrics: ServeMetrics) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get("/users/{user}")
    def user(user: str) -> dict[str, str]:
        return {"user": user}

    @app.get("/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    return app


def test_requests_are_counted_by_route_template_and_status():
    metrics = ServeMetrics()
    with TestClient(small_app(metrics), raise_server_exceptions=False) as client:
        for user in ("ana", "ben"):
            assert client.get(f"/users/{user}").status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.get("/fails").status_code == 500
    metrics.observe_stages({"decode": 0.2, "encode": 0.03, "score": 0.004, "explain": 0.002})
    found = samples(metrics.exposition().decode())
    assert found["phr_http_requests_total", frozenset({"route": "/users/{user}", "method": "GET",
                                                       "status": "200"}.items())] == 2
    assert found["phr_http_requests_total", frozenset({"route": "unmatched", "method": "GET",
                                                       "status": "404"}.items())] == 1
    assert found["phr_http_requests_total", frozenset({"route": "/fails", "method": "GET",
                                                       "status": "500"}.items())] == 1
    assert found["phr_http_request_duration_seconds_count", frozenset({"route": "/users/{user}"}.items())] == 2
    assert found["phr_http_requests_in_progress", frozenset()] == 0
    for stage in ("decode", "encode", "score", "explain"):
        assert found["phr_recommend_stage_seconds_count", frozenset({"stage": stage}.items())] == 1
    assert found["phr_recommend_stage_seconds_bucket", frozenset({"stage": "decode", "le": "0.25"}.items())] == 1


def test_the_model_series_names_only_the_checkpoint_serving():
    metrics = ServeMetrics()
    metrics.serving("a" * 64, 1000.0)
    metrics.serving("b" * 64, 2000.0, previous="a" * 64)
    found = samples(metrics.exposition().decode())
    assert {labels: value for (name, labels), value in found.items() if name == "phr_model_info"} == {
        frozenset({"sha256": "b" * 64}.items()): 1}
    assert found["phr_model_loaded_timestamp_seconds", frozenset()] == 2000.0


def worker(sha256: str) -> None:
    """A worker process's share of the values (run by multiprocessing)."""
    metrics = ServeMetrics()
    metrics.requests.labels("/recommend", "POST", "200").inc(3)
    metrics.serving(sha256, 1000.0)


def test_workers_values_add_up_in_multiprocess_mode(tmp_path, monkeypatch):
    """What --workers sets up (serving/lifecycle.py): each worker process writes its values into
    a shared folder, and any worker's /metrics sums them (the model series: one per worker)."""
    monkeypatch.setenv(metrics_module.MULTIPROCESS_DIR, str(tmp_path))
    workers = []
    for sha256 in ("a" * 64, "b" * 64):
        process = multiprocessing.get_context("spawn").Process(target=worker, args=(sha256,))
        process.start()
        process.join()
        assert process.exitcode == 0
        workers.append(str(process.pid))
    found = samples(ServeMetrics().exposition().decode())
    assert found["phr_http_requests_total", frozenset({"route": "/recommend", "method": "POST",
                                                       "status": "200"}.items())] == 6
    serving = {dict(labels)["pid"]: dict(labels)["sha256"] for (name, labels), value in found.items()
               if name == "phr_model_info" and value == 1}
    assert serving == dict(zip(workers, ("a" * 64, "b" * 64)))


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter `logging_config` declares, built as dictConfig builds it (without
    reconfiguring this process's logging)."""
    config = logging_config(log_format)
    return logging.config.DictConfigurator(config).configure_formatter(config["formatters"]["phr"])


def test_json_log_lines_carry_time_level_logger_message_and_the_request_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(LogFormat.json))
    log = logging.getLogger("phr.test.json")
    log.addHandler(handler)
    try:
        log.warning("200 ok clip %.1f s", 1.25, extra={"status": 200, "decode_ms": 12, "color_message": "x"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("reload failed")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "200 ok clip 1.2 s" and first["level"] == "WARNING"
    assert first["logger"] == "phr.test.json" and first["time"].startswith("20") and "T" in first["time"]
    assert first["status"] == 200 and first["decode_ms"] == 12 and "color_message" not in first
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc_info"]


def test_text_log_lines_read_as_before():
    record = logging.LogRecord("phr.serve", logging.INFO, __file__, 1, "200 ok", None, None)
    assert formatter(LogFormat.text).format(record).endswith(" phr.serve 200 ok")


def test_with_json_logs_a_server_that_cannot_start_says_why_in_json(tmp_path):
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "phr_cli", "serve", "--checkpoint", str(garbage), "--device", "cpu",
                           "--log-format", "json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    [line] = [json.loads(line) for line in done.stderr.splitlines()]
    assert line["level"] == "ERROR" and "not a readable phr checkpoint" in line["message"]
