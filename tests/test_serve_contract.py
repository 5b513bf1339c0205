"""`phr serve` does what its OpenAPI document says: schemathesis (every check) against a live server.

The server runs under uvicorn in a thread, with a token (so that the auth checks have something
to check) and a media root holding the file the document's JSON example names (so that the
examples phase gets a 200 answer to check against the schema). schemathesis runs as its CLI,
the way a client's developer would run it, deterministically and with a bounded number of
examples; support/contract_hooks.py says which one failure it does not count, and why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_serve import checkpoint, corpus, free_port, recommender  # noqa: F401 (the trained corpus's fixtures)

from phr_cli.serving.options import ServeOptions
from phr_cli.serving.schema import RECOMMEND_EXAMPLE
from phr_cli.serving.serve import create_app
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKEN = "contract-token"
EXAMPLES = 30  # per operation: the run stays under a minute on two cores
READY_WITHIN = 120.0  # seconds the encoders may take to load on a busy machine


def test_schemathesis_finds_nothing(recommender, checkpoint, corpus, tmp_path):  # noqa: F811
    media_root = tmp_path / "media"
    media_root.mkdir()
    media.copy_clip(corpus / "clips" / "ocean_01.mp4", media_root / RECOMMEND_EXAMPLE["path"])  # a stored clip
    port = free_port()
    # Its own journal: the posts schemathesis publishes go to this test's model only.
    options = ServeOptions(port=port, token=TOKEN, media_root=media_root, decode_workers=0,
                           journal=str(tmp_path / "journal.db"))
    server = uvicorn.Server(uvicorn.Config(create_app(recommender, options, checkpoint), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, url)
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "all",
             "--header", f"Authorization: Bearer {TOKEN}", "--max-examples", str(EXAMPLES),
             "--generation-deterministic", "--workers", "1", "--request-timeout", "60", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "support.contract_hooks",
                 "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    summary = run.stdout[run.stdout.find("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-4000:]
    print(summary)  # operations, test cases and findings: `pytest -s` shows them
    # A failure's report quotes whole uploads: the head of the output and the summary are enough.
    assert run.returncode == 0, run.stdout[:6000] + "\n…\n" + summary + run.stderr[-2000:]
    assert "6 selected / 6 total" in run.stdout and "No issues found" in run.stdout


def wait_until_ready(server: uvicorn.Server, url: str) -> None:
    """Until /health/ready answers 200: a request before would wait for the encoders and time out."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if server.started:
            status = httpx.get(f"{url}/health/ready", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            if status == 200:
                return
            assert status == 503, status
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {READY_WITHIN:g} s")
