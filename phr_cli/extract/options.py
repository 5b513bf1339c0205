"""What `phr extract` is asked (`ExtractOptions`) and what it reports (`ExtractReport`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from phr_cli.data.decode_options import DecodeLimits, FrameSampling
from phr_cli.data.statuses import FAILED_STATUSES, Status
from phr_cli.errors import DataError

if TYPE_CHECKING:
    from phr_cli.data.store import PostChanges


class NothingToExtractError(DataError):
    """A folder without videos or posts: extracting it would add nothing to the store."""


@dataclass
class ExtractOptions:
    device: str = "auto"
    workers: int | None = None  # decoding processes; None: one per core, 0: in-process
    batch_size: int = 64  # frames per ResNet50 batch
    weights_dir: Path | None = None
    random_weights: bool = False
    sampling: FrameSampling = field(default_factory=FrameSampling)
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    feature_dtype: str = "float32"
    precision: str = "fp32"  # autocast of ResNet50 and VGGish: fp32, bf16 or fp16
    commit_every: int = 32  # videos per crash-safe segment
    strict: bool = False  # stop at the first failed file
    ray: bool = False  # decode and encode on a Ray cluster (see phr_cli.extract.ray)
    ray_address: str | None = None  # cluster to join; None: $RAY_ADDRESS, else a local one
    ray_encoders: int | None = None  # encoder actors; None: one per cluster GPU, else one
    replace: bool = False  # start the store over: drop other folders' posts and unused videos


@dataclass
class VideoOutcome:
    path: Path
    status: Status
    reason: str


def _no_post_changes() -> PostChanges:
    # The store module (h5py, numpy) is imported when a report is made: the options import
    # light, and the CLI reads their defaults.
    from phr_cli.data.store import PostChanges

    return PostChanges()


@dataclass
class ExtractReport:
    store: Path
    posts: int = 0
    videos: int = 0  # distinct video files found
    extracted: int = 0  # processed in this run, failed ones and retried ones included
    extract_failed: int = 0  # of those, failed (`failures` also holds files that failed before: missing, ...)
    reused: int = 0  # already in the store (same content hash) and not failed there
    retried: int = 0  # in the store as failed (timed out, corrupt, ...): extracted again
    retried_ok: int = 0  # of those, now without a failure
    retried_failed: int = 0  # of those, failed again
    statuses: Counter = field(default_factory=Counter)
    failures: list[VideoOutcome] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # the manifest's, line-numbered
    seconds: float = 0.0
    encoders_loaded: bool = False  # False: nothing to encode, the encoders were not loaded
    load_seconds: float = 0.0  # loading the encoders, included in seconds
    decode_wait_seconds: float = 0.0  # main process waiting for decoders (with Ray: the cluster)
    encode_seconds: float = 0.0
    write_seconds: float = 0.0  # waiting for the segment writer (which runs beside encoding), and the final merge
    text_seconds: float = 0.0
    stopped_early: bool = False
    post_changes: PostChanges = field(default_factory=_no_post_changes)  # what the /posts table gained and kept

    def count(self, outcome: VideoOutcome, retried: bool) -> None:
        """An extracted video's outcome; `retried`: its stored copy had failed."""
        self.extracted += 1
        self.statuses[outcome.status] += 1
        failed = outcome.status in FAILED_STATUSES
        if failed:
            self.failures.append(outcome)
            self.extract_failed += 1
        if retried:
            self.retried_failed += failed
            self.retried_ok += not failed

    @property
    def succeeded(self) -> int:
        """Videos extracted in this run without a failure."""
        return self.extracted - self.extract_failed

    @property
    def videos_per_second(self) -> float:
        """Throughput of the videos extracted without a failure (reused ones are no work), once
        the encoders are loaded."""
        busy = self.seconds - self.load_seconds
        return self.succeeded / busy if busy > 0 else 0.0


ProgressCallback = Callable[[VideoOutcome, ExtractReport, int], None]
# (phase name, how many videos it will take or None)
PhaseCallback = Callable[[str, "int | None"], None]
