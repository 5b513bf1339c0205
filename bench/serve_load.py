"""`phr serve` under load on loopback, against one `phr recommend` process per clip; a reload
and a stop under load.

On the bundled samples, from the repository root:

    phr extract sample_videos/ --random-weights && phr train
    python bench/serve_load.py [--store phr_data/features.h5] [--checkpoint models/gcn-phr.pt]
        [--clients 8] [--requests 1000] [--max-seconds 900] [--cold 3] [--device auto]
        [--scenarios load,reload,sigterm] [--swap-to models/other.pt] [--burst-clients 32]

Starts `phr serve` on 127.0.0.1 (a free port) as a subprocess and waits for /health. Then,
in one run: `--cold` fresh `phr recommend CLIP --json` processes (the per-clip cost without
a server); `--warm` sequential uploads (one client: a clip's latency on a warm server);
and `--requests` uploads from `--clients` concurrent clients, stopped after
`--max-seconds`. Clips are fresh synthetic clips like the samples (3 s; `--clip-seconds`),
new to the store, so every request is decoded and encoded. Latencies are split into decode,
encode, score (graph + scoring) and explain from the server's Server-Timing header; the server's RSS
(VmRSS, decoding workers not included) is read after request 100 and after the last.

`reload`: `--burst-clients` clients post without pause to a server serving a copy of the
checkpoint; after `--before` answers, `--swap-to` (default: a checkpoint trained here with the
next seed) is moved into place and the server gets SIGHUP. Reported: failed requests (any answer
but 200, or none), and p95 of the requests that overlapped the swap (from SIGHUP until
/metrics names the new checkpoint) over p95 of those answered before it, once the burst was
steady (after its first wave; target: 0 failed, ratio ≤ 2). `sigterm`: the same burst on a
fresh server, SIGTERM after `--before` answers; each client keeps posting (a new connection
each time) until the server refuses connections.
Reported: requests the server took (connected) and how many of them were answered (target: all),
the drain time and the exit status (target: 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: synthetic media
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recommend_latency import phr_command, run_seconds

from phr_cli.files import sha256_of
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
    for stage in ("decode", "encode", "score", "explain"):
        print(f"{' ' * len(name)}  {stage:6} {percentiles([parts[stage] for _, parts in results])}")


def start_server(phr: list[str], checkpoint: Path, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    """`phr serve` on a free loopback port, once /health answers; its log (stderr) in `log`."""
    port = free_port()
    server = subprocess.Popen(
        [*phr, "serve", "--checkpoint", str(checkpoint), "--store", str(args.store), "--host", "127.0.0.1",
         "--port", str(port), "--device", args.device, "--decode-workers", str(args.decode_workers),
         "--workers", str(args.workers), "--drain-timeout", str(args.drain_timeout)],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"),  # noqa: SIM115 - lives with the server
    )
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.perf_counter() - started > 300:
            server.kill()
            raise SystemExit(f"phr serve did not start: see {log}")
        time.sleep(0.5)


def serving_sha256(base: str) -> set[str]:
    """The checkpoints serving (phr_model_info at 1; with --workers, one series per worker)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return {s.labels["sha256"] for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "phr_model_info" and s.value == 1}


Attempt = tuple[float, float, str]  # start, end (perf_counter) and outcome: "200", another status, or an error


async def attempt(client: httpx.AsyncClient, clip: Path, user: str) -> Attempt:
    started = time.perf_counter()
    try:
        response = await client.post("/recommend", data={"user": user},
                                     files={"clip": (clip.name, clip.read_bytes())})
        outcome = str(response.status_code) if response.status_code != 200 or response.json()["suggestions"] \
            else "200 without suggestions"
    except httpx.ConnectError:
        outcome = "refused"  # the server no longer accepts connections
    except httpx.HTTPError as error:
        outcome = type(error).__name__
    return started, time.perf_counter(), outcome


async def burst(base: str, clips: list[Path], users: list[str], clients: int, before: int, event,
                fresh_connections: bool = False) -> tuple[list[Attempt], float, float, float]:
    """`clients` clients posting without pause; after `before` answers, `event()` (awaited) runs.
    The clients stop once it ended and every client had one more answer (or a refused
    connection). Returns the attempts, when the burst was steady (its first `clients` answers
    in: the first wave queued behind one another) and the event's start and end times."""
    await sequential(base, clips, users[0], 1)  # the encoders load on the first request: not the burst's
    attempts: list[Attempt] = []
    event_started = event_ended = 0.0
    event_done = asyncio.Event()
    limits = httpx.Limits(max_keepalive_connections=0) if fresh_connections else httpx.Limits()
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        async def client_loop(n: int) -> None:
            after_event = 0
            while after_event < 1:
                result = await attempt(client, clips[n % len(clips)], users[n % len(users)])
                attempts.append(result)
                n += clients
                if (event_done.is_set() and result[0] >= event_ended) or result[2] == "refused":
                    after_event += 1
                if result[2] == "refused":
                    return

        loops = [asyncio.create_task(client_loop(n)) for n in range(clients)]
        while sum(outcome == "200" for _, _, outcome in attempts) < before:
            await asyncio.sleep(0.05)
        event_started = time.perf_counter()
        await event()
        event_ended = time.perf_counter()
        event_done.set()
        await asyncio.gather(*loops)
    steady = sorted(end for _, end, _ in attempts)[clients - 1]
    return attempts, steady, event_started, event_ended


def p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 95)) if values else float("nan")


def reload_scenario(phr: list[str], clips: list[Path], users: list[str], args: argparse.Namespace,
                    scratch: Path) -> None:
    live = scratch / "serving.pt"
    shutil.copy(args.checkpoint, live)
    swap_to = args.swap_to
    if swap_to is None:  # another model of the same store: the next seed
        swap_to = scratch / "swap.pt"
        seed = load_checkpoint(args.checkpoint).train_config.seed + 1
        subprocess.run([*phr, "train", "--store", str(args.store), "--checkpoint", str(swap_to), "--seed",
                        str(seed), "--device", args.device, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    new_sha = sha256_of(swap_to)
    server, base = start_server(phr, live, args, scratch / "serve-reload.log")

    async def swap() -> None:
        staged = live.with_suffix(".new")
        shutil.copy(swap_to, staged)
        os.replace(staged, live)
        server.send_signal(signal.SIGHUP)
        while await asyncio.to_thread(serving_sha256, base) != {new_sha}:
            if server.poll() is not None:
                raise SystemExit(f"phr serve ended during the reload: see {scratch / 'serve-reload.log'}")
            await asyncio.sleep(0.05)

    try:
        attempts, steady, swap_started, swap_ended = asyncio.run(
            burst(base, clips, users, args.burst_clients, args.before, swap))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    failed = [outcome for _, _, outcome in attempts if outcome != "200"]
    before = [end - start for start, end, _ in attempts if start >= steady and end <= swap_started]
    during = [end - start for start, end, _ in attempts if start < swap_ended and end > swap_started]
    print(f"reload under {args.burst_clients} concurrent clients: {len(attempts)} requests, {len(failed)} failed"
          + (f" ({', '.join(sorted(set(failed)))})" if failed else "")
          + f"; swap {swap_ended - swap_started:.2f} s (SIGHUP to /metrics naming the new checkpoint)")
    print(f"  p95 before the swap (steady burst) {1000 * p95(before):.0f} ms (n={len(before)}), during it "
          f"{1000 * p95(during):.0f} ms (n={len(during)}): ratio {p95(during) / p95(before):.2f} (target ≤ 2)")


def sigterm_scenario(phr: list[str], clips: list[Path], users: list[str], args: argparse.Namespace,
                     scratch: Path) -> None:
    server, base = start_server(phr, args.checkpoint, args, scratch / "serve-sigterm.log")
    exit_status: list[int] = []

    async def stop() -> None:
        server.send_signal(signal.SIGTERM)
        exit_status.append(await asyncio.to_thread(server.wait, args.drain_wait))

    try:
        attempts, _, stop_sent, exited = asyncio.run(
            burst(base, clips, users, args.burst_clients, args.before, stop, fresh_connections=True))
    finally:
        if server.poll() is None:
            server.kill()
    taken = [outcome for _, _, outcome in attempts if outcome != "refused"]
    answered = [outcome for outcome in taken if outcome == "200"]
    in_flight = sum(start < stop_sent < end for start, end, outcome in attempts if outcome != "refused")
    print(f"SIGTERM during a burst of {args.burst_clients} clients: {len(taken)} requests taken, "
          f"{len(answered)} answered 200, {len(taken) - len(answered)} not"
          + (f" ({', '.join(sorted(set(taken) - {'200'}))})" if len(answered) < len(taken) else "")
          + f"; {in_flight} were in flight at SIGTERM; {len(attempts) - len(taken)} refused after it")
    print(f"  exit status {exit_status[0]} after {exited - stop_sent:.2f} s of draining "
          f"(--drain-timeout {args.drain_timeout:g})")


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
    parser.add_argument("--workers", type=int, default=1, help="phr serve --workers")
    parser.add_argument("--scenarios", default="load,reload,sigterm",
                        help="comma-separated: load (cold, warm, throughput), reload, sigterm")
    parser.add_argument("--swap-to", type=Path, help="the checkpoint the reload swaps in (default: trained here, "
                        "the next seed)")
    parser.add_argument("--burst-clients", type=int, default=32, help="concurrent clients of reload and sigterm")
    parser.add_argument("--before", type=int, default=96, help="answers before the reload or SIGTERM")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="phr serve --drain-timeout: a burst of clips on a CPU takes minutes to answer")
    parser.add_argument("--drain-wait", type=float, default=600.0, help="seconds to wait for the server to exit")
    args = parser.parse_args()
    scenarios = set(args.scenarios.split(","))
    if not scenarios <= {"load", "reload", "sigterm"}:
        raise SystemExit(f"--scenarios: unknown {sorted(scenarios - {'load', 'reload', 'sigterm'})}")

    scratch = Path(tempfile.mkdtemp(prefix="phr-serve-bench-"))
    clips = [media.write_clip(scratch / f"clip{i}.mp4", args.clip_seconds, pattern=["ocean", "fire", "city"][i % 3],
                              tone_hz=110.0 + 50 * i, noise=0.15, seed=5000 + i) for i in range(args.clips)]
    users = load_checkpoint(args.checkpoint).users
    phr = phr_command()
    print(f"machine: {os.cpu_count()} CPUs; device {args.device}; clips of {args.clip_seconds:g} s")
    if "reload" in scenarios:
        reload_scenario(phr, clips, users, args, scratch)
    if "sigterm" in scenarios:
        sigterm_scenario(phr, clips, users, args, scratch)
    if "load" in scenarios:
        load_scenario(phr, clips, users, args, scratch)


def load_scenario(phr: list[str], clips: list[Path], users: list[str], args: argparse.Namespace,
                  scratch: Path) -> None:
    cold = [run_seconds([*phr, "recommend", str(clips[n % len(clips)]), "--user", users[0], "--json",
                         "--checkpoint", str(args.checkpoint), "--store", str(args.store),
                         "--device", args.device])[0] for n in range(args.cold)]

    started = time.perf_counter()
    server, base = start_server(phr, args.checkpoint, args, scratch / "serve.log")
    ready = time.perf_counter() - started
    try:
        rss_start = rss_mib(server.pid)
        warm = asyncio.run(sequential(base, clips, users[0], args.warm))
        results, seconds, rss = asyncio.run(load(base, clips, users, args.clients, args.requests,
                                                 args.max_seconds, server.pid))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)

    warm_p50 = statistics.median(total for total, _ in warm)
    print(f"server ready after {ready:.1f} s")
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
