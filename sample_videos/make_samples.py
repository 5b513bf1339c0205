"""Regenerate phr's bundled sample set: synthetic micro-videos plus posts.csv.

Usage: python sample_videos/make_samples.py [OUT_DIR]   (default: this folder)

Four topics that differ by colour, motion and sound (ocean, fire, forest, city),
five users with personal hashtag habits, two text-only posts. Deterministic: every
clip has a fixed seed. After writing, every clip is reopened with PyAV and checked
for the intended streams; a table is printed.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import av

# The synthetic-media writer is test support, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import media  # noqa: E402

#: per-topic sound (write_clip keyword arguments)
SOUND: dict[str, dict[str, float]] = {
    "ocean": {"tone_hz": 110.0, "noise": 0.15},                 # low hum + surf
    "fire": {"tone_hz": 70.0, "noise": 0.05, "crackle": 0.7},   # rumble + crackle
    "forest": {"tone_hz": 3000.0, "noise": 0.02, "pulse_hz": 4.0},  # bird chirps
    "city": {"tone_hz": 480.0, "noise": 0.08},                  # mid tone + traffic
}


@dataclass(frozen=True)
class Clip:
    """One sample post with a video file."""

    video: str
    topic: str
    user: str
    seconds: float
    caption: str
    hashtags: str
    audio: bool = True
    gop: int | None = None
    rate: int = 44100
    channels: int = 1
    extra: dict = field(default_factory=dict)


# User habits: u1 #travel (often #wanderlust), u2 #mood, u3 #vlog, u4 #photography,
# u5 #weekend. Topic tags follow the content. Inline hashtags are also listed.
CLIPS: list[Clip] = [
    Clip("ocean_01.mp4", "ocean", "u1", 3.0, "Morning swim at the cove #beach",
         "#beach #ocean #travel #wanderlust", gop=15),
    Clip("ocean_02.mp4", "ocean", "u2", 2.5, "Listening to the #waves all afternoon",
         "#waves #ocean #mood", rate=48000, channels=2),
    Clip("trips/plage été.mp4", "ocean", "u1", 3.5, "Dernier jour à la plage #été",
         "#été #beach #ocean #travel", gop=30),
    Clip("ocean_short.mp4", "ocean", "u3", 0.5, "Quick splash #vlog",
         "#vlog #beach #waves"),
    Clip("ocean_05.mov", "ocean", "u5", 3.0, "Sunset swim #Beach with friends",
         "#beach #sunset #weekend", gop=15, channels=2),
    Clip("ocean_06.mp4", "ocean", "u4", 4.0, "Long exposure of the tide",
         "#ocean #waves #photography", gop=8),
    Clip("fire_01.mp4", "fire", "u5", 3.0, "Saturday night #campfire",
         "#campfire #fire #weekend", gop=15),
    Clip("fire_02.mp4", "fire", "u3", 2.0, "Cooking on the #fire #vlog",
         "#fire #campfire #vlog", rate=48000),
    Clip("fire_03.mp4", "fire", "u2", 2.5, "Warm and quiet #mood",
         "#mood #fire #cozy"),
    Clip("fire_04.mp4", "fire", "u5", 3.0, "Embers after midnight",
         "#campfire #weekend #night", audio=False, gop=8),
    Clip("fire_05.avi", "fire", "u4", 2.0, "Flames up close",
         "#fire #flames #photography", channels=2),
    Clip("forest_01.mp4", "forest", "u4", 3.5, "Morning light in the #forest",
         "#forest #nature #photography", gop=15),
    Clip("forest_02.mkv", "forest", "u4", 3.0, "Birdsong under the pines #nature",
         "#nature #forest #birds #photography", rate=48000, channels=2),
    Clip("forest_03.mp4", "forest", "u1", 2.5, "Trail day #hiking",
         "#hiking #forest #travel #wanderlust"),
    Clip("forest_04.mp4", "forest", "u3", 3.0, "Walking the woods #vlog",
         "#vlog #forest #nature", gop=30),
    Clip("forest_05.mp4", "forest", "u2", 2.0, "Green everywhere",
         "#nature #mood #green", audio=False),
    Clip("city_01.mp4", "city", "u1", 3.0, "Downtown at dusk #city",
         "#city #street #travel", gop=15),
    Clip("trips/city walk.mp4", "city", "u3", 4.0, "City walk #vlog #street",
         "#vlog #street #city", gop=8, rate=48000),
    Clip("city_03.mp4", "city", "u2", 2.0, "Neon and rain #night",
         "#night #city #mood", audio=False),
    Clip("city_04.mp4", "city", "u3", 2.5, "Rush hour #dailyvlog",
         "#dailyvlog #vlog #city #street", channels=2),
    Clip("city_05.webm", "city", "u5", 3.0, "Out late #night",
         "#night #city #weekend", gop=15),
    Clip("city_06.mp4", "city", "u1", 3.5, "Lost in a new #city #travel",
         "#city #travel #street #wanderlust"),
]

#: text-only posts (no video): caption and hashtags only
TEXT_POSTS: list[tuple[str, str, str]] = [
    ("u2", "Rainy Sunday, tea and a good book #mood", "#mood #cozy"),
    ("u1", "Packing for the coast next week #travel", "#travel #beach #ocean"),
]


def write_clips(out: Path) -> None:
    """Write every clip of ``CLIPS`` under ``out``."""
    for i, c in enumerate(CLIPS):
        path = out / c.video
        path.parent.mkdir(parents=True, exist_ok=True)
        sound = dict(SOUND[c.topic])
        sound["tone_hz"] *= 1.0 + 0.03 * (i % 5 - 2)  # small per-clip variation
        if not c.audio:
            sound = {"tone_hz": None}
        media.write_clip(path, c.seconds, pattern=c.topic, gop=c.gop,
                         sample_rate=c.rate, channels=c.channels, seed=100 + i,
                         **sound, **c.extra)


def write_posts(out: Path) -> None:
    """Write ``out/posts.csv`` (video, user, caption, hashtags)."""
    with open(out / "posts.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video", "user", "caption", "hashtags"])
        for c in CLIPS:
            w.writerow([c.video, c.user, c.caption, c.hashtags])
        for user, caption, tags in TEXT_POSTS:
            w.writerow(["", user, caption, tags])


def check(out: Path) -> int:
    """Reopen every clip, assert its streams, print a table; return total bytes."""
    total = 0
    print(f"{'file':24} {'topic':6} {'user':4} {'dur_s':>5} {'bytes':>6} "
          f"{'v':>1} {'a':>1} {'audio codec':16} {'kf':>2}")
    for c in CLIPS:
        path = out / c.video
        size = path.stat().st_size
        total += size
        with av.open(str(path)) as ct:
            nv, na = len(ct.streams.video), len(ct.streams.audio)
            assert nv == 1 and na == int(c.audio), (c.video, nv, na)
            a = ct.streams.audio[0] if na else None
            acodec = f"{a.codec_context.name} {a.rate} {a.channels}ch" if a else "-"
            packets = ct.demux(ct.streams.video[0])
            kf = sum(1 for p in packets if p.is_keyframe and p.size)
            dur = ct.duration / 1e6
        assert abs(dur - c.seconds) < 0.15, (c.video, dur)
        print(f"{c.video:24} {c.topic:6} {c.user:4} {dur:5.2f} {size:6d} "
              f"{nv:1d} {na:1d} {acodec:16} {kf:2d}")
    print(f"{len(CLIPS)} clips, {len(TEXT_POSTS)} text-only posts, "
          f"total {total} bytes ({total / 2**20:.2f} MiB)")
    return total


def main(argv: list[str]) -> None:
    """Entry point: regenerate the sample set in ``argv[0]`` or this folder."""
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    write_clips(out)
    write_posts(out)
    check(out)


if __name__ == "__main__":
    main(sys.argv[1:])
