"""A synthetic feature store of the paper's YFCC100M size, written through phr's own store API.

    python bench/synthetic_store.py [--scale 1.0] [--out bench_work/synthetic/features-1.0.h5]

YFCC100M in the paper: 134,992 micro-videos, 8,126 users, 23,054 hashtags; `--scale`
multiplies all three. The features are random with planted structure, so that training
has something to learn and timings see realistic graph shapes:
- topics have latent vectors; each modality's feature is a fixed random projection of the
  post's topic vector plus noise (10 % of videos have no audio, as with silent clips);
- users have a sparse taste over topics and a few personal hashtags;
- each hashtag belongs to one topic, with Zipf popularity inside it; a post carries about
  3 hashtags: 1-3 from its topic and each of its user's personal hashtags with some chance.
Personal hashtags are dealt round-robin over all hashtags, so nearly every hashtag is used.

Videos stream to the store in segments (`StoreWriter.commit`), so generation holds one
chunk of features at a time; `finalize` (the product's merge) then reads them all once.
Prints one summary line.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phr_cli.data.decode_options import FrameSampling
from phr_cli.data.statuses import Status
from phr_cli.data.store import (
    ACOUSTIC_DIM,
    TEXT_EMBEDDING_DIM,
    TEXTUAL_DIM,
    VISUAL_DIM,
    PostRows,
    StoreWriter,
    TextProjection,
)
from phr_cli.encoders.registry import DEFAULT_ENCODERS

YFCC_POSTS, YFCC_USERS, YFCC_HASHTAGS = 134_992, 8_126, 23_054
N_TOPICS, LATENT_DIM = 200, 32
PERSONAL_TAGS_PER_USER = 3
CHUNK_VIDEOS = 4096  # videos per store segment


@dataclass
class SyntheticSummary:
    path: Path
    posts: int
    users: int
    hashtags_used: int
    tags_per_post: float
    seconds: float
    peak_rss_gib: float
    file_gib: float


def _video_key(seed: int, post: int) -> str:
    """A content-hash-shaped key (64 hex digits), unique per post and seed."""
    return hashlib.sha256(f"phr-synthetic/{seed}/{post}".encode()).hexdigest()


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def write_synthetic_store(path: Path, scale: float = 1.0, seed: int = 0,
                          feature_dtype: str = "float32") -> SyntheticSummary:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_posts = max(10, round(YFCC_POSTS * scale))
    n_users = max(2, round(YFCC_USERS * scale))
    n_hashtags = max(4, round(YFCC_HASHTAGS * scale))
    n_topics = max(2, min(N_TOPICS, n_hashtags // 4))

    # Latent structure: topic vectors, hashtag topics with Zipf popularity, user tastes.
    topic_vectors = rng.normal(size=(n_topics, LATENT_DIM))
    hashtag_topic = rng.integers(0, n_topics, size=n_hashtags)
    tags_of_topic = [np.flatnonzero(hashtag_topic == t) for t in range(n_topics)]
    tag_weights_of_topic = [_zipf_weights(len(tags), 1.0, rng) for tags in tags_of_topic]
    user_taste = rng.dirichlet(np.full(n_topics, 0.05), size=n_users)
    dealt = rng.permutation(np.resize(np.arange(n_hashtags), n_users * PERSONAL_TAGS_PER_USER))
    personal_tags = dealt.reshape(n_users, PERSONAL_TAGS_PER_USER)
    # Heavy users and light ones: a Zipf-like share of the posts per user, each at least one.
    user_share = _zipf_weights(n_users, 0.7, rng)
    post_user = np.concatenate([np.arange(n_users), rng.choice(n_users, size=n_posts - n_users, p=user_share)])
    post_user = rng.permutation(post_user)
    post_topic = (user_taste[post_user].cumsum(axis=1) > rng.random((n_posts, 1))).argmax(axis=1)

    hashtags: list[list[str]] = []
    for user, topic in zip(post_user, post_topic):
        tags_here = tags_of_topic[topic]
        n_topic_tags = min(len(tags_here), int(rng.integers(1, 4)))
        picked = set(rng.choice(tags_here, size=n_topic_tags, replace=False, p=tag_weights_of_topic[topic]).tolist()) \
            if n_topic_tags else set()
        picked |= {int(t) for t in personal_tags[user] if rng.random() < 0.35}
        if not picked:  # a topic without hashtags: fall back on a personal one
            picked = {int(personal_tags[user, 0])}
        hashtags.append([f"tag{t}" for t in sorted(picked)])

    # Each modality's feature is a random projection of the topic vector plus noise.
    projections = {width: rng.normal(size=(LATENT_DIM, width)) / np.sqrt(LATENT_DIM)
                   for width in (VISUAL_DIM, ACOUSTIC_DIM, TEXT_EMBEDDING_DIM)}
    text_basis, _ = np.linalg.qr(rng.normal(size=(TEXT_EMBEDDING_DIM, TEXTUAL_DIM)))
    projection = TextProjection(mean=np.zeros(TEXT_EMBEDDING_DIM, np.float32),
                                components=text_basis.T.astype(np.float32),
                                explained_variance_ratio=np.full(TEXTUAL_DIM, 1.0 / TEXTUAL_DIM, np.float32))
    has_audio = rng.random(n_posts) > 0.1

    def features(width: int, rows: slice) -> np.ndarray:
        signal = topic_vectors[post_topic[rows]] @ projections[width]
        return (signal + rng.normal(size=signal.shape)).astype(np.float32)

    keys = [_video_key(seed, post) for post in range(n_posts)]
    encoders = {m: {"spec": spec.to_dict(), "weights": "synthetic"} for m, spec in DEFAULT_ENCODERS.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with StoreWriter(path, encoders, FrameSampling().to_dict(), feature_dtype) as writer:
        for start in range(0, n_posts, CHUNK_VIDEOS):
            rows = slice(start, min(start + CHUNK_VIDEOS, n_posts))
            visual, acoustic = features(VISUAL_DIM, rows), features(ACOUSTIC_DIM, rows)
            for offset, post in enumerate(range(rows.start, rows.stop)):
                audio = bool(has_audio[post])
                writer.add(key=keys[post], path=f"synthetic/{post:06d}.mp4", duration=15.0,
                           status=Status.OK if audio else Status.NO_AUDIO, reason="", n_frames=8,
                           n_audio_examples=15 if audio else 0, visual=visual[offset],
                           acoustic=acoustic[offset] if audio else np.zeros(ACOUSTIC_DIM, np.float32),
                           visual_mask=True, acoustic_mask=audio)
            writer.commit()
        text_embedding = features(TEXT_EMBEDDING_DIM, slice(0, n_posts))
        posts = PostRows(
            video_key=keys,
            path=[f"synthetic/{post:06d}.mp4" for post in range(n_posts)],
            user=[f"user{u}" for u in post_user],
            caption=[f"synthetic post {post}" for post in range(n_posts)],
            hashtags=hashtags,
            status=[Status.OK if a else Status.NO_AUDIO for a in has_audio],
            text_embedding=text_embedding,
            textual=projection.apply(text_embedding),
            textual_mask=np.ones(n_posts, dtype=bool),
        )
        writer.finalize(posts, projection)

    return SyntheticSummary(
        path=path,
        posts=n_posts,
        users=len(set(post_user.tolist())),
        hashtags_used=len({t for tags in hashtags for t in tags}),
        tags_per_post=float(np.mean([len(tags) for tags in hashtags])),
        seconds=time.perf_counter() - started,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        file_gib=path.stat().st_size / 2**30,
    )


def default_store_path(scale: float) -> Path:
    return Path("bench_work/synthetic") / f"features-{scale:g}.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of YFCC100M's size")
    parser.add_argument("--out", type=Path, help="store path (default bench_work/synthetic/features-SCALE.h5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float16", action="store_true", help="store features as float16 (half the file)")
    args = parser.parse_args()
    out = args.out or default_store_path(args.scale)
    if out.exists():
        raise SystemExit(f"{out} exists; delete it or choose another --out")
    s = write_synthetic_store(out, args.scale, args.seed, "float16" if args.float16 else "float32")
    print(f"synthetic store scale={args.scale:g}: {s.posts} posts, {s.users} users, {s.hashtags_used} hashtags used, "
          f"{s.tags_per_post:.2f} hashtags/post; {s.seconds:.1f} s, peak RSS {s.peak_rss_gib:.2f} GiB, "
          f"file {s.file_gib:.2f} GiB -> {s.path}")


if __name__ == "__main__":
    main()
