"""`phr serve` under load on loopback, against one `phr recommend` process per clip.

On the bundled samples, from the repository root:

    phr extract sample_videos/ --random-weights && phr train
    python bench/serve_load.py [--store phr_data/features.h5] [--checkpoint models/gcn-phr.pt]
        [--clients 8] [--requests 1000] [--max-seconds 900] [--cold 3] [--device auto]

Starts `phr serve` on 127.0.0.1 (a free port) as a subprocess and waits for /health. Then,
in one run: `--cold` fresh `phr recommend CLIP --json` processes (the per-clip cost without
a server); `--warm` sequential uploads (one client: a clip's latency on a warm server);
and `--requests` uploads from `--clients` concurrent clients, stopped after
`--max-seconds`. Clips are fresh synthetic clips like the samples (3 s; `--clip-seconds`),
new to the store, so every request is decoded and encoded. Latencies are split into decode,
encode and score (graph + scoring + explanations) from the server's Server-Timing header; the server's RSS
(VmRSS, decoding workers not included) is read after request 100 and after the last.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: synthetic media
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recommend_latency import phr_command, run_seconds

from phr_cli.training.checkpoint import load_checkpoint
from support import media


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def stages(header: str) -> dict[str, float]:
    """Server-Timing 'decode;dur=12.3, …' -> {'decode': 0.0123, …} in seconds."""
    parsed = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        parsed[name] = float(duration) / 1000
    return parsed


def percentiles(values: list[float]) -> str:
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000, [50, 95, 99])
    return f"p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f} ms"


async def post(client: httpx.AsyncClient, clip: Path, user: str) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    response = await client.post("/recommend", data={"user": user}, files={"clip": (clip.name, clip.read_bytes())})
    seconds = time.perf_counter() - started
    if response.status_code != 200 or not response.json()["suggestions"]:
        raise SystemExit(f"{clip}: {response.status_code} {response.text[:300]}")
    return seconds, stages(response.headers["server-timing"])


async def load(base: str, clips: list[Path], users: list[str], clients: int, requests: int,
               max_seconds: float, pid: int) -> tuple[list[tuple[float, dict[str, float]]], float, dict[int, float]]:
    """`requests` uploads from `clients` concurrent clients (fewer if `max_seconds` runs out)."""
    results: list[tuple[float, dict[str, float]]] = []
    rss: dict[int, float] = {}
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            n = issued
            issued += 1
            results.append(await post(client, clips[n % len(clips)], users[n % len(users)]))
            if len(results) in (1, 100, requests):
                rss[len(results)] = rss_mib(pid)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    rss[len(results)] = rss_mib(pid)
    return results, time.perf_counter() - started, rss


async def sequential(base: str, clips: list[Path], user: str, count: int) -> list[tuple[float, dict[str, float]]]:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await post(client, clips[0], user)  # warm-up: first batch, allocator, thread start
        return [await post(client, clips[n % len(clips)], user) for n in range(count)]


def report(name: str, results: list[tuple[float, dict[str, float]]]) -> None:
    print(f"{name}: total  {percentiles([total for total, _ in results])}")
    for stage in ("decode", "encode", "score"):
        print(f"{' ' * len(name)}  {stage:6} {percentiles([parts[stage] for _, parts in results])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("phr_data/features.h5"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/gcn-phr.pt"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop issuing uploads after this")
    parser.add_argument("--warm", type=int, default=20, help="sequential uploads (one client)")
    parser.add_argument("--cold", type=int, default=3, help="fresh `phr recommend` processes")
    parser.add_argument("--clips", type=int, default=8, help="distinct synthetic clips, cycled")
    parser.add_argument("--clip-seconds", type=float, default=3.0,
                        help="length of each synthetic clip (shorter: more requests per minute on a CPU)")
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="phr-serve-bench-"))
    clips = [media.write_clip(scratch / f"clip{i}.mp4", args.clip_seconds, pattern=["ocean", "fire", "city"][i % 3],
                              tone_hz=110.0 + 50 * i, noise=0.15, seed=5000 + i) for i in range(args.clips)]
    users = load_checkpoint(args.checkpoint).users
    phr = phr_command()

    cold = [run_seconds([*phr, "recommend", str(clips[n % len(clips)]), "--user", users[0], "--json",
                         "--checkpoint", str(args.checkpoint), "--store", str(args.store),
                         "--device", args.device])[0] for n in range(args.cold)]

    port = free_port()
    server = subprocess.Popen(
        [*phr, "serve", "--checkpoint", str(args.checkpoint), "--store", str(args.store), "--host", "127.0.0.1",
         "--port", str(port), "--device", args.device, "--decode-workers", str(args.decode_workers)],
        stdout=subprocess.DEVNULL, stderr=open(scratch / "serve.log", "w"),  # noqa: SIM115 - lives with the server
    )
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit(f"phr serve did not start: see {scratch / 'serve.log'}")
            time.sleep(0.5)
        ready = time.perf_counter() - started
        rss_start = rss_mib(server.pid)
        warm = asyncio.run(sequential(base, clips, users[0], args.warm))
        results, seconds, rss = asyncio.run(load(base, clips, users, args.clients, args.requests,
                                                 args.max_seconds, server.pid))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    warm_p50 = statistics.median(total for total, _ in warm)
    print(f"machine: {os.cpu_count()} CPUs; device {args.device}; clips of {args.clip_seconds:g} s; "
          f"server ready after {ready:.1f} s")
    print(f"cold `phr recommend` process per clip: median {statistics.median(cold):.2f} s (n={len(cold)})")
    report(f"warm serve, 1 client, n={len(warm)}", warm)
    print(f"warm vs cold: {statistics.median(cold) / warm_p50:.1f}x faster (median cold process / p50 warm)")
    report(f"load, {args.clients} clients, n={len(results)}", results)
    print(f"throughput: {len(results) / seconds:.2f} clips/s over {seconds:.1f} s"
          + ("" if len(results) == args.requests else f" (stopped at --max-seconds: {len(results)} requests)"))
    marks = sorted(rss)
    print(f"server RSS: {rss_start:.0f} MiB ready, " + ", ".join(f"{rss[n]:.0f} MiB after request {n}" for n in marks)
          + (f"; last/100: {rss[marks[-1]] / rss[100]:.3f}" if 100 in rss else ""))


if __name__ == "__main__":
    main()
