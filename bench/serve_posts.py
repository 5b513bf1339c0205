"""POST /posts under load: how long a published post takes to be recorded and counted, that
the next request sees it, and that a server killed with SIGKILL in a burst loses no post it
acknowledged.

    python bench/serve_posts.py [--work DIR] [--posts N] [--burst-threads N]

Builds a store and a small checkpoint of sample_videos/ (random encoder weights: the timing
of a post does not depend on them), then runs `phr serve` with --media-root sample_videos/
and a journal in DIR. Posts name stored clips by path, so no clip is decoded: the figures are
the request, the journal's durable write and the fold-in (Server-Timing's `record`).
1. N posts one after another, each followed by GET /users/ID: p50/p95 of the post's round
   trip and of its record stage, and how many follow-up reads missed the post (target 0).
2. A burst from several threads; SIGKILL the server mid-burst; restart it on the same
   journal: every acknowledged post must be in the journal and in /users' counts.
3. With --replicas: two servers on two ports sharing a PostgreSQL journal (a server the bench
   starts, as the tests do): each post sent to one, then /users polled on the other until it
   counts the post; p50/p95 of that delay (target: within 1 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_videos"
sys.path.insert(0, str(ROOT / "tests"))  # the tests' own server and PostgreSQL starters

from support import served  # noqa: E402
from support.postgres import free_port, running_server  # noqa: E402


def phr(*arguments: str) -> None:
    subprocess.run([sys.executable, "-m", "phr_cli", *arguments], check=True, cwd=ROOT)


def start_server(checkpoint: Path, store: Path, journal: Path | str, port: int, work: Path) -> subprocess.Popen:
    """`phr serve` of the checkpoint recording into `journal`, paths under sample_videos/, once it answers."""
    return served.start_server(checkpoint, store, port, "--journal", str(journal), "--media-root", str(SAMPLES),
                               log=work / f"server-{port}.log")


def record_stage(response: httpx.Response) -> float:
    """Server-Timing's `record` (ms)."""
    timing = dict(part.split(";dur=") for part in response.headers["server-timing"].split(", "))
    return float(timing["record"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench_work/serve_posts"))
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--burst-threads", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=0, metavar="N",
                        help="also N posts across two replicas sharing a PostgreSQL journal")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    store, checkpoint, journal = work / "features.h5", work / "model.pt", work / "journal.db"
    if not checkpoint.exists():
        phr("extract", str(SAMPLES), "--store", str(store), "--random-weights", "--device", "cpu", "-q")
        phr("train", "--store", str(store), "--checkpoint", str(checkpoint), "--epochs", "3", "--device", "cpu",
            "-q")
    journal.unlink(missing_ok=True)
    clips = sorted(p.name for p in SAMPLES.glob("*.mp4"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(checkpoint, store, journal, port, work)
    try:
        round_trips, records, missed = [], [], 0
        with httpx.Client(base_url=url, timeout=60) as client:
            for n in range(args.posts):
                user = f"bench{n % 10}"
                tag = f"livetag{n % 7}"
                started = time.perf_counter()
                answer = client.post("/posts", json={"path": clips[n % len(clips)], "user": user, "hashtags": [tag],
                                                     "id": f"seq-{n}"})
                round_trips.append(1000 * (time.perf_counter() - started))
                assert answer.status_code == 201, answer.text
                records.append(record_stage(answer))
                counts = {h["hashtag"]: h["count"] for h in client.get(f"/users/{user}").json()["hashtags"]}
                expected = sum(1 for m in range(n + 1) if m % 10 == n % 10 and m % 7 == n % 7)
                missed += counts.get(tag, 0) != expected
        print(f"serve posts: {args.posts} posts one after another: round trip p50 {np.percentile(round_trips, 50):.1f} "
              f"ms, p95 {np.percentile(round_trips, 95):.1f} ms; record stage (journal write + fold-in) p50 "
              f"{np.percentile(records, 50):.1f} ms, p95 {np.percentile(records, 95):.1f} ms (target p95 < 50); "
              f"follow-up reads that missed the post: {missed} (target 0)")

        acknowledged: list[tuple[str, str]] = []
        lock = threading.Lock()

        def burst(thread: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                for n in range(10_000):
                    post_id, user = f"burst-{thread}-{n}", f"burster{thread}"
                    try:
                        answer = client.post("/posts", json={"path": clips[n % len(clips)], "user": user,
                                                             "hashtags": ["burst"], "id": post_id})
                    except httpx.TransportError:
                        return  # the server is gone
                    if answer.status_code == 201:
                        with lock:
                            acknowledged.append((post_id, user))

        threads = [threading.Thread(target=burst, args=(t,)) for t in range(args.burst_threads)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 100:
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        for thread in threads:
            thread.join()
    finally:
        if server.poll() is None:
            server.kill()
    server = start_server(checkpoint, store, journal, port, work)
    try:
        from phr_cli.data.journal import SQLiteJournal

        with SQLiteJournal(journal) as opened:
            recorded = {post.id for _, post in opened.read()}
        lost = [post_id for post_id, _ in acknowledged if post_id not in recorded]
        per_user = Counter(user for _, user in acknowledged)
        with httpx.Client(base_url=url, timeout=60) as client:
            short = sum(1 for user, count in per_user.items()
                        if {h["hashtag"]: h["count"] for h in client.get(f"/users/{user}").json()["hashtags"]}
                        .get("burst", 0) < count)
        print(f"serve posts: SIGKILL during a burst from {args.burst_threads} threads: {len(acknowledged)} posts "
              f"acknowledged, {len(lost)} missing from the journal after restart, {short} user(s) whose counts "
              f"lack an acknowledged post (target 0 and 0)")
    finally:
        server.terminate()
        server.wait()
    if args.replicas:
        replicas(checkpoint, store, args.replicas, clips, work)


def replicas(checkpoint: Path, store: Path, posts: int, clips: list[str], work: Path) -> None:
    with running_server() as url:
        ports = free_port(), free_port()
        servers = [start_server(checkpoint, store, url, port, work) for port in ports]
        try:
            delays = []
            with httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=60) as sender, \
                    httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", timeout=60) as other:
                for n in range(posts):
                    user = f"replica{n}"
                    answer = sender.post("/posts", json={"path": clips[n % len(clips)], "user": user,
                                                         "hashtags": ["shared"], "id": f"replica-{n}"})
                    assert answer.status_code == 201, answer.text
                    acknowledged = time.perf_counter()
                    while not other.get(f"/users/{user}").json()["known"]:
                        time.sleep(0.01)
                    delays.append(time.perf_counter() - acknowledged)
            print(f"serve posts: two replicas sharing a PostgreSQL journal: {posts} posts sent to one, counted by "
                  f"the other after p50 {1000 * np.percentile(delays, 50):.0f} ms, p95 "
                  f"{1000 * np.percentile(delays, 95):.0f} ms, max {1000 * max(delays):.0f} ms (target ≤ 1 s)")
        finally:
            for server in servers:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
