"""`phr recommend`: ranked hashtags for new clips, personalised to the user who posts them.

A clip is encoded with exactly the encoders, weights and sampling recorded in the
checkpoint (those of the store it was trained on); a clip already in that store reuses its
stored features. The user's learned representation personalises the score; an unknown
user (or none) gets the mean user representation, i.e. a content-based ranking for an
average user.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from phr_cli import decode
from phr_cli.checkpoint import load_checkpoint
from phr_cli.decode import DecodedClip, FrameSampling
from phr_cli.devices import resolve_device
from phr_cli.encoders.pipeline import Encoders, content_key
from phr_cli.encoders.registry import EncoderMismatchError, random_weights_id
from phr_cli.graph import PostData
from phr_cli.posts import caption_without_hashtags, normalize_user, parse_hashtags
from phr_cli.statuses import Status
from phr_cli.store import ACOUSTIC_DIM, VISUAL_DIM, load_store


@dataclass
class Suggestion:
    rank: int
    hashtag: str
    score: float
    used_before: bool


@dataclass
class ClipRecommendation:
    clip: str
    status: Status  # the decoder's status, or STORED when the store's features were reused
    notices: list[str]
    user: str | None
    personalised: bool  # False: the user is unknown, content-based ranking
    suggestions: list[Suggestion] = field(default_factory=list)
    error: str | None = None  # set when the clip gave nothing to rank from

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timings:
    load: float = 0.0
    decode: float = 0.0
    encode: float = 0.0
    score: float = 0.0


class Recommender:
    """Loads a checkpoint once; recommends for any number of clips."""

    def __init__(self, checkpoint_path: Path, device: torch.device | str = "auto",
                 weights_dir: Path | None = None, store_path: Path | None = None) -> None:
        started = time.perf_counter()
        self.checkpoint = load_checkpoint(checkpoint_path)
        provenance = self.checkpoint.provenance
        self.device = resolve_device(device)  # a torch.device from the CLI stays as it is
        self.scorer = self.checkpoint.scorer(self.device)
        self.fingerprint: dict = provenance.encoders
        self.sampling = FrameSampling(**provenance.sampling)
        self.projection = provenance.text_projection()
        self.user_hashtags: dict[str, set[str]] = {
            user: set(tags) for user, tags in provenance.user_hashtags.items()}
        random = {m: e["weights"] == random_weights_id() for m, e in self.fingerprint.items()}
        self.random_weights = random["visual"] or random["acoustic"]
        # Encode as the store's videos were: the same weights and autocast precision.
        self.encoders = Encoders(self.device, weights_dir, self.random_weights,
                                 self.fingerprint["visual"].get("precision", "fp32"))
        self.store_path = Path(store_path or provenance.store)
        self._stored: dict[str, tuple[np.ndarray, np.ndarray, bool, bool]] | None = None
        self.timings = Timings(load=time.perf_counter() - started)

    def _check_encoder(self, modality: str) -> None:
        """Refuse an encoder whose spec or weights differ from the store's."""
        encoder = getattr(self.encoders, modality)
        recorded = self.fingerprint[modality]
        if encoder.spec.to_dict() != recorded["spec"] or encoder.weights_id != recorded["weights"]:
            raise EncoderMismatchError(
                f"the {modality} encoder here ({encoder.spec.name}, weights {encoder.weights_id[:16]}) "
                f"differs from the one that built {self.store_path} ({recorded['spec']['name']}, "
                f"weights {recorded['weights'][:16]}); use the same weight files (--weights-dir) "
                "or re-extract and retrain"
            )

    def _stored_features(self) -> dict[str, tuple[np.ndarray, np.ndarray, bool, bool]]:
        """The training store's features by content key (empty if the store is gone).

        Only videos with some content are kept: a file that failed at extraction is decoded
        again, so that its status and reason reach the user.
        """
        if self._stored is None:
            self._stored = {}
            if self.store_path.exists():
                contents = load_store(self.store_path)
                # Features of another store are only comparable if made the same way.
                if (contents.attributes.get("encoders") != self.fingerprint
                        or contents.attributes.get("sampling") != self.sampling.to_dict()):
                    raise EncoderMismatchError(
                        f"{self.store_path} was built with other encoders or frame sampling than "
                        f"the store this checkpoint was trained on ({self.checkpoint.provenance.store}); "
                        "pass that store with --store"
                    )
                videos = contents.videos
                for row, key in enumerate(videos.key):
                    if videos.visual_mask[row] or videos.acoustic_mask[row]:
                        self._stored[key] = (np.asarray(videos.visual[row], np.float32),
                                             np.asarray(videos.acoustic[row], np.float32),
                                             bool(videos.visual_mask[row]), bool(videos.acoustic_mask[row]))
        return self._stored

    def recommend(self, clips: list[Path], user: str | None = None, caption: str = "",
                  top: int = 10, exclude_used: bool = False) -> list[ClipRecommendation]:
        checkpoint = self.checkpoint
        user = normalize_user(user)
        position = checkpoint.user_position(user) if user else -1
        personalised = position >= 0
        results, features, masks, decoded = [], [], [], []
        for clip in clips:
            notices = []
            tick = time.perf_counter()
            key, unreadable = _content_key(clip)
            stored = self._stored_features().get(key) if key else None
            if stored is not None:
                status = Status.STORED
                visual, acoustic, has_visual, has_acoustic = stored
                notices += [f"ranked without {modality} features" for modality, present in
                            (("visual", has_visual), ("acoustic", has_acoustic)) if not present]
            else:
                result = decode.decode_clip(clip, self.sampling) if key else unreadable
                status = result.status
                decoded.append((len(results), result))
                visual, acoustic = np.zeros(VISUAL_DIM, np.float32), np.zeros(ACOUSTIC_DIM, np.float32)
                has_visual = has_acoustic = False
                if result.reason:
                    notices.append(f"{result.status}: {result.reason}")
            self.timings.decode += time.perf_counter() - tick
            features.append([visual, acoustic])
            masks.append([has_visual, has_acoustic])
            results.append(ClipRecommendation(str(clip), status, notices, user, personalised))

        tick = time.perf_counter()
        self._encode_decoded(decoded, features, masks, results)
        text = caption_without_hashtags(caption)
        textual = np.zeros((1, self.projection.components.shape[0]), np.float32)
        if text:
            self._check_encoder("textual")
            textual = self.projection.apply(self.encoders.textual.embed([text]))
        self.timings.encode += time.perf_counter() - tick

        tick = time.perf_counter()
        n = len(clips)
        posts = PostData(
            users=[user or ""] * n, items=[""] * n, hashtags=[[] for _ in range(n)],
            features={"visual": np.stack([f[0] for f in features]),
                      "acoustic": np.stack([f[1] for f in features]),
                      "textual": np.repeat(textual, n, axis=0)},
            masks={"visual": np.array([m[0] for m in masks]), "acoustic": np.array([m[1] for m in masks]),
                   "textual": np.full(n, bool(text))},
        )
        scores = self.scorer.score(np.full(n, position), posts).cpu().numpy()
        in_caption = set(parse_hashtags(caption))
        used = self.user_hashtags.get(user or "", set())
        for result, row, has_visual, has_acoustic, has_text in zip(
                results, scores, posts.masks["visual"], posts.masks["acoustic"], posts.masks["textual"]):
            if not (has_visual or has_acoustic or has_text):
                result.error = f"{result.clip}: " + (result.notices[0] if result.notices else "no content")
                continue
            excluded = in_caption | (used if exclude_used else set())
            order = np.argsort(-row, kind="stable")
            for column in order:
                hashtag = checkpoint.hashtags[column]
                if hashtag in excluded:
                    continue
                result.suggestions.append(Suggestion(len(result.suggestions) + 1, hashtag,
                                                     float(row[column]), hashtag in used))
                if len(result.suggestions) == top:
                    break
        self.timings.score += time.perf_counter() - tick
        return results

    def closest_users(self, user: str, count: int = 3) -> list[str]:
        """Known user ids that look like `user` (a typo, another spelling), closest first."""
        return difflib.get_close_matches(normalize_user(user) or "", self.checkpoint.users, n=count)

    def _encode_decoded(self, decoded, features, masks, results) -> None:
        """Encode the clips that had to be decoded, in one batch per encoder."""
        usable = [(i, clip) for i, clip in decoded if clip.frames is not None or clip.audio is not None]
        if not usable:
            return
        if any(clip.frames is not None for _, clip in usable):
            self._check_encoder("visual")
        if any(clip.audio is not None for _, clip in usable):
            self._check_encoder("acoustic")
        encoded = self.encoders.encode_clips([clip for _, clip in usable], batch_size=64)
        for (i, _), values in zip(usable, encoded):
            for slot, modality in enumerate(("visual", "acoustic")):
                if values[modality] is not None:
                    features[i][slot] = values[modality]
                    masks[i][slot] = True
                else:
                    results[i].notices.append(f"ranked without {modality} features")


def _content_key(clip: Path) -> tuple[str | None, DecodedClip | None]:
    """The clip's content key, or None and the status that replaces decoding it."""
    if not clip.is_file():
        return None, DecodedClip(None, None, 0.0, Status.MISSING, "file not found")
    try:
        return content_key(clip), None
    except OSError as error:  # e.g. no read permission: reported like any other bad clip
        return None, DecodedClip(None, None, 0.0, Status.UNREADABLE, f"cannot read: {error.strerror}")
