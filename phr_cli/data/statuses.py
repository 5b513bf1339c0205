"""Every status a video, a post or a recommended clip can get, and the sets that group them.

Stored in the feature store as the plain strings (`Status.OK == "ok"`); a `str` enum so
that strings read back from a store compare, hash and print as the members do.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    # The decoder's, most severe first; a clip gets the most severe that applies.
    UNREADABLE = "unreadable"  # the file cannot be opened (permissions, I/O error)
    CORRUPT = "corrupt"  # nothing could be decoded
    CRASHED = "crashed"  # the decoding process died (an FFmpeg crash, or killed for memory)
    TIMED_OUT = "timed_out"  # decoding took longer than the per-file limit and was stopped
    TRUNCATED = "truncated"  # decoding stopped part-way; features from what was decoded
    TOO_LARGE = "too_large"  # frames above the pixel limit: visual masked, audio kept
    NO_VIDEO = "no_video"  # audio only: visual masked
    NO_AUDIO = "no_audio"  # no audio stream (or no samples): acoustic masked
    TOO_SHORT = "too_short"  # audio shorter than one VGGish example: acoustic masked
    OK = "ok"
    # A post's, beyond the decoder's: the file is gone, or the post has no video.
    MISSING = "missing"
    TEXT_ONLY = "text_only"
    # A recommended clip's: the training store's features were reused, nothing decoded.
    STORED = "stored"

    def __str__(self) -> str:  # "ok", not "Status.OK", on every Python version
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# The decoder's statuses, most severe first.
SEVERITY = (Status.UNREADABLE, Status.CORRUPT, Status.CRASHED, Status.TIMED_OUT, Status.TRUNCATED,
            Status.TOO_LARGE, Status.NO_VIDEO, Status.NO_AUDIO, Status.TOO_SHORT, Status.OK)
# A file that gave no features at all.
NO_FEATURES = frozenset({Status.UNREADABLE, Status.CORRUPT, Status.CRASHED, Status.TIMED_OUT})
# Files `phr extract` reports as failed (exit code 1): no features, or features from part of the file.
FAILED_STATUSES = NO_FEATURES | {Status.TRUNCATED, Status.TOO_LARGE, Status.MISSING}
# Posts whose video gives training nothing (a post without a video is text-only, not unusable).
UNUSABLE_STATUSES = NO_FEATURES | {Status.MISSING}
