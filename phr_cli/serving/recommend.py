"""`phr recommend`: ranked hashtags for new clips, personalised to the user who posts them.

A clip is encoded with exactly the encoders, weights and sampling recorded in the
checkpoint (those of the store it was trained on); a clip already in that store reuses its
stored features. The user's learned representation personalises the score; an unknown
user (or none) gets the mean user representation, i.e. a content-based ranking for an
average user.

The store is the one the checkpoint was trained on, found relative to the checkpoint first
(`Checkpoint.find_store`), or the one given; without it clips are decoded anew and nothing
is explained, and `explain_problem` says why.
"""

from __future__ import annotations

import difflib
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from phr_cli.data import decode
from phr_cli.data.decode import DecodedClip
from phr_cli.data.decode_options import FrameSampling
from phr_cli.data.graph import MODALITIES, PostData, text_item_key
from phr_cli.data.journal import JOURNAL_SOURCE, LivePost
from phr_cli.data.posts import caption_without_hashtags, normalize_user, parse_hashtags
from phr_cli.data.provenance import select_trained_posts
from phr_cli.data.statuses import Status
from phr_cli.data.store import ACOUSTIC_DIM, TEXT_EMBEDDING_DIM, VISUAL_DIM, StoreContents, load_store
from phr_cli.devices import resolve_device
from phr_cli.encoders.pipeline import Encoders, content_key
from phr_cli.encoders.registry import random_weights_id
from phr_cli.errors import EncoderMismatchError, PhrError
from phr_cli.ranking.live import LiveModel
from phr_cli.ranking.rerank import RERANKER_PART
from phr_cli.serving.explain import Because, Explainer, sentences, shares
from phr_cli.training.checkpoint import Checkpoint, load_checkpoint


class ClipError(PhrError):
    """A clip named to `recommend` that is not there or cannot be read."""


@dataclass
class Suggestion:
    rank: int
    hashtag: str
    score: float
    used_before: bool
    because: Because | None = None  # set when explanations were asked for and the store allows them


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


@dataclass
class PreparedClip:
    """One clip on its way to a ranking: looked up in the store, else decoded, then encoded."""

    clip: str
    caption: str
    status: Status | None = None  # None: neither stored nor decoded yet
    notices: list[str] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=lambda: {
        "visual": np.zeros(VISUAL_DIM, np.float32), "acoustic": np.zeros(ACOUSTIC_DIM, np.float32)})
    masks: dict[str, bool] = field(default_factory=lambda: {"visual": False, "acoustic": False, "textual": False})
    decoded: DecodedClip | None = None  # frames and audio waiting for the encoders
    # The caption's sentence embedding before the store's projection: what a published post's store row keeps.
    text_embedding: np.ndarray = field(default_factory=lambda: np.zeros(TEXT_EMBEDDING_DIM, np.float32))
    key: str = ""  # content key: a video the model was trained on is ranked with its ID and history
    duration: float = 0.0
    timings: Timings = field(default_factory=Timings)

    @property
    def needs_decoding(self) -> bool:
        return self.status is None


class Recommender:
    """Loads a checkpoint once; recommends for any number of clips.

    A clip goes `look_up` -> (`decode` or the caller's own decoder, then `set_decoded`) ->
    `encode` (many clips in one batch) -> `rank`; `recommend` chains them for a list of
    files, `phr serve` runs the steps where they fit (a decoding pool, one encoder batch for
    the clips that arrive together).
    """

    def __init__(self, checkpoint_path: Path, device: torch.device | str = "auto",
                 weights_dir: Path | None = None, store_path: Path | None = None) -> None:
        started = time.perf_counter()
        self.checkpoint = load_checkpoint(checkpoint_path)
        provenance = self.checkpoint.provenance
        self.device = resolve_device(device)  # a torch.device from the CLI stays as it is
        self.scorer = self.checkpoint.scorer(self.device)
        self.fingerprint: dict = provenance.encoders
        self.sampling = _recorded_sampling(provenance.sampling, checkpoint_path)
        self.projection = provenance.text_projection()
        # The posts published since training are folded in here (POST /posts in serve).
        self.live = LiveModel(self.scorer, self.checkpoint.users, self.checkpoint.hashtags)
        random = {m: e["weights"] == random_weights_id() for m, e in self.fingerprint.items()}
        self.random_weights = random["visual"] or random["acoustic"]
        # Encode as the store's videos were: the same weights and autocast precision.
        self.encoders = Encoders(self.device, weights_dir, self.random_weights,
                                 self.fingerprint["visual"].get("precision", "fp32"))
        self.store_path, self.store_problem = _training_store(self.checkpoint, checkpoint_path, store_path)
        self._stored: dict[str, tuple[np.ndarray, np.ndarray, bool, bool]] | None = None
        self._explainer: Explainer | None = None
        # Journal posts the checkpoint was trained on (taken into its store): never folded in again.
        self.trained_journal_ids: set[str] = set()
        self.explain_problem = ""  # why explanations are unavailable, once tried
        self._store_lock = threading.Lock()  # serve looks clips up from several threads
        self.timings = Timings(load=time.perf_counter() - started)

    def _check_encoder(self, modality: str) -> None:
        """Refuse an encoder whose spec or weights differ from the store's."""
        encoder = getattr(self.encoders, modality)
        recorded = self.fingerprint[modality]
        if encoder.spec.to_dict() != recorded["spec"] or encoder.weights_id != recorded["weights"]:
            raise EncoderMismatchError(
                f"the {modality} encoder here ({encoder.spec.name}, weights {encoder.weights_id[:16]}) "
                f"differs from the one that built {self.checkpoint.provenance.store or 'the store'} "
                f"({recorded['spec']['name']}, "
                f"weights {recorded['weights'][:16]}); use the same weight files (--weights-dir) "
                "or re-extract and retrain"
            )

    def load_store(self, explain: bool = False) -> None:
        """Read the training store once: its features by content key (empty if the store is
        gone) and, with `explain`, the evidence behind explanations.

        Only videos with some content are kept: a file that failed at extraction is decoded
        again, so that its status and reason reach the user.
        """
        with self._store_lock:
            if self._stored is not None and (self._explainer is not None or self.explain_problem or not explain):
                return
            if self.store_path is None:
                self._stored = self._stored or {}
                self.explain_problem = self.store_problem
                return
            contents = load_store(self.store_path)
            # Features of another store are only comparable if made the same way.
            if (contents.attributes.get("encoders") != self.fingerprint
                    or contents.attributes.get("sampling") != self.sampling.to_dict()):
                raise EncoderMismatchError(
                    f"{self.store_path} was built with other encoders or frame sampling than "
                    f"the store this checkpoint was trained on ({self.checkpoint.provenance.store}); "
                    "pass that store with --store"
                )
            if self._stored is None:
                self.trained_journal_ids = self._trained_journal_ids(contents)
                videos, stored = contents.videos, {}
                for row, key in enumerate(videos.key):
                    if videos.visual_mask[row] or videos.acoustic_mask[row]:
                        stored[key] = (np.asarray(videos.visual[row], np.float32),
                                       np.asarray(videos.acoustic[row], np.float32),
                                       bool(videos.visual_mask[row]), bool(videos.acoustic_mask[row]))
                self._stored = stored
            if explain:
                try:
                    self._explainer = Explainer(self.checkpoint, contents, self.scorer.model)
                except PhrError as error:  # the ranking still works; say why it has no reasons
                    self.explain_problem = str(error)

    def _trained_journal_ids(self, contents: StoreContents) -> set[str]:
        try:
            selected, _ = select_trained_posts(contents, self.checkpoint.provenance)
        except PhrError:  # not the posts it was trained on: explanations say why
            return set()
        assert contents.posts is not None and contents.posts.source is not None
        sources = contents.posts.source
        return {sources[row].removeprefix(JOURNAL_SOURCE)
                for row in selected.store_rows[self.checkpoint.split.train].tolist()
                if sources[row].startswith(JOURNAL_SOURCE)}

    def user_hashtag_counts(self, user: str) -> dict[str, int | None]:
        """The user's hashtags with their number of posts, training and published since, most
        used first (a model without the count evidence: the training hashtags, counts None)."""
        user = normalize_user(user) or ""
        if self.scorer.model.evidence is None:
            return dict.fromkeys(sorted(self.checkpoint.provenance.user_hashtags.get(user, ())))
        position = self.live.user_position(user)
        return {self.live.hashtags[c]: round(n) for c, n in self.live.user_counts(position).items()}

    def known_user(self, user: str) -> bool:
        """Whether the user has posts: in training or published since."""
        return self.live.user_position(normalize_user(user)) >= 0

    def fold_in(self, posts: list[LivePost]) -> None:
        """Posts published since training, in the user's history from the next ranking on.
        Not thread-safe with `rank`: serve calls both on its one device thread."""
        if posts:
            self.live.fold_in(live_post_data(posts))

    def closest_users(self, user: str, count: int = 3) -> list[str]:
        """Known user ids that look like `user` (a typo, another spelling), closest first."""
        return difflib.get_close_matches(normalize_user(user) or "", self.checkpoint.users, n=count)

    def look_up(self, clip: Path, caption: str = "") -> PreparedClip:
        """The clip with the store's features if the store holds it, with the status that
        replaces decoding if it cannot be read, else still to decode."""
        tick = time.perf_counter()
        self.load_store()
        prepared = PreparedClip(str(clip), caption)
        key, unreadable = _content_key(clip)
        prepared.key = key or ""
        stored = self._stored.get(key) if key and self._stored is not None else None
        if unreadable is not None:
            self.set_decoded(prepared, unreadable)
        elif stored is not None:
            prepared.status = Status.STORED
            visual, acoustic, has_visual, has_acoustic = stored
            prepared.features.update(visual=visual, acoustic=acoustic)
            prepared.masks.update(visual=has_visual, acoustic=has_acoustic)
            prepared.notices += [f"ranked without {modality} features" for modality, present in
                                 (("visual", has_visual), ("acoustic", has_acoustic)) if not present]
        self._spent(prepared, "decode", tick)
        return prepared

    def decode(self, prepared: PreparedClip) -> None:
        """Decode here, in this thread (serve decodes in a pool and calls `set_decoded`)."""
        tick = time.perf_counter()
        self.set_decoded(prepared, decode.decode_clip(Path(prepared.clip), self.sampling))
        self._spent(prepared, "decode", tick)

    @staticmethod
    def set_decoded(prepared: PreparedClip, decoded: DecodedClip) -> None:
        prepared.status, prepared.decoded, prepared.duration = decoded.status, decoded, decoded.duration
        if decoded.reason:
            prepared.notices.append(f"{decoded.status}: {decoded.reason}")

    def encode(self, clips: list[PreparedClip]) -> None:
        """Encode the decoded clips in one batch per encoder, and the captions in one."""
        tick = time.perf_counter()
        usable = [(c, c.decoded) for c in clips if c.decoded is not None
                  and (c.decoded.frames is not None or c.decoded.audio is not None)]
        if any(decoded.frames is not None for _, decoded in usable):
            self._check_encoder("visual")
        if any(decoded.audio is not None for _, decoded in usable):
            self._check_encoder("acoustic")
        if usable:
            encoded = self.encoders.encode_clips([decoded for _, decoded in usable], batch_size=64)
            for (clip, _), values in zip(usable, encoded):
                for modality in ("visual", "acoustic"):
                    if values[modality] is not None:
                        clip.features[modality] = values[modality]
                        clip.masks[modality] = True
                    else:
                        clip.notices.append(f"ranked without {modality} features")
        texts = {c.caption: caption_without_hashtags(c.caption) for c in clips}
        wanted = sorted({text for text in texts.values() if text})
        embedded = {}
        if wanted:
            self._check_encoder("textual")
            raw = np.asarray(self.encoders.textual.embed(wanted), np.float32)
            embedded = dict(zip(wanted, zip(raw, self.projection.apply(raw))))
        for clip in clips:
            clip.decoded = None  # frames are large; the features are all that is kept
            text = texts[clip.caption]
            clip.masks["textual"] = bool(text)
            if text:
                clip.text_embedding, clip.features["textual"] = embedded[text]
            else:
                clip.features["textual"] = np.zeros(self.projection.components.shape[0], np.float32)
        share = (time.perf_counter() - tick) / max(1, len(clips))
        for clip in clips:  # one batch's time, shared by the clips in it
            clip.timings.encode += share
        self.timings.encode += time.perf_counter() - tick

    def rank(self, clip: PreparedClip, user: str | None = None, top: int = 10, exclude_used: bool = False,
             explain: bool = False) -> ClipRecommendation:
        """The clip's top hashtags for `user`, with their reasons when `explain`."""
        tick = time.perf_counter()
        user = normalize_user(user)
        position = self.live.user_position(user)
        assert clip.status is not None, "rank a clip after looking it up and decoding it"
        result = ClipRecommendation(clip.clip, clip.status, clip.notices, user, position >= 0)
        if not any(clip.masks.values()):
            result.error = f"{result.clip}: " + (result.notices[0] if result.notices else "no content")
            return result
        posts = PostData(
            users=[user or ""], items=[clip.key], hashtags=[[]],
            features={m: clip.features[m][None] for m in ("visual", "acoustic", "textual")},
            masks={m: np.array([clip.masks[m]]) for m in ("visual", "acoustic", "textual")},
            times=np.array([time.time()]),  # posted now: the user's recent hashtags count most
        )
        [row] = self.scorer.score(np.array([position]), posts).cpu().numpy()
        excluded = set(parse_hashtags(clip.caption))
        used = set(self.user_hashtag_counts(user)) if user else set()
        if exclude_used:
            excluded |= used
        for column in np.argsort(-row, kind="stable"):
            hashtag = self.live.hashtags[column]
            if hashtag in excluded:
                continue
            result.suggestions.append(Suggestion(len(result.suggestions) + 1, hashtag,
                                                 float(row[column]), hashtag in used))
            if len(result.suggestions) == top:
                break
        if explain:
            self._explain(result, clip, posts, position)
        self._spent(clip, "score", tick)
        return result

    def _explain(self, result: ClipRecommendation, clip: PreparedClip, posts: PostData, position: int) -> None:
        self.load_store(explain=True)
        if self._explainer is None:
            result.notices.append(f"no explanations: {self.explain_problem}")
            return
        device = self.scorer.user_reps.device
        columns = [self.live.hashtag_index[s.hashtag] for s in result.suggestions]
        with torch.no_grad():
            item = self.scorer.model.network.encode_items(
                {m: torch.as_tensor(f, device=device) for m, f in posts.features.items()},
                {m: torch.as_tensor(k, device=device) for m, k in posts.masks.items()})[0]
        [parts] = self.scorer.parts(np.array([position]), posts)
        part_values = {name: part[0, columns].cpu().numpy() for name, part in parts.items()}
        if self.scorer.reranker is not None:  # what the trees moved: the parts then add up to the score
            calibrated = sum(part_values.values())
            part_values[RERANKER_PART] = np.array([s.score for s in result.suggestions], np.float32) - calibrated
        # The explainer knows the training graph: a user or hashtag first seen since has no
        # training videos to show; the uses (and the latest) count the posts published since too.
        assert posts.times is not None  # rank() posts the clip now
        posted = float(posts.times[0])
        n_users, n_hashtags = len(self.checkpoint.trained_users), len(self.checkpoint.trained_hashtags)
        trained = [n for n, column in enumerate(columns) if column < n_hashtags]
        reasons = dict(zip(trained, self._explainer.explain(
            position if position < n_users else -1, item, {name: v[trained] for name, v in part_values.items()},
            [columns[n] for n in trained], posted)))
        uses = self.live.user_counts(position)
        for n, (suggestion, column) in enumerate(zip(result.suggestions, columns)):
            because = reasons.get(n) or Because(shares({name: float(v[n]) for name, v in part_values.items()}),
                                                0, None, [], [], 0, 0, [])
            because.uses = round(uses.get(column, 0))
            because.last_used = self.live.last_use(position, column)
            because.sentences = sentences(because, suggestion.hashtag, position >= 0, posted)
            suggestion.because = because

    def _spent(self, clip: PreparedClip, step: str, since: float) -> None:
        seconds = time.perf_counter() - since
        setattr(clip.timings, step, getattr(clip.timings, step) + seconds)
        setattr(self.timings, step, getattr(self.timings, step) + seconds)

    def recommend(self, clips: list[Path], user: str | None = None, caption: str = "",
                  top: int = 10, exclude_used: bool = False, explain: bool = False) -> list[ClipRecommendation]:
        prepared = [self.look_up(clip, caption) for clip in clips]
        for clip in prepared:
            if clip.needs_decoding:
                self.decode(clip)
        self.encode(prepared)
        return [self.rank(clip, user, top, exclude_used, explain) for clip in prepared]


def live_post_data(posts: list[LivePost]) -> PostData:
    """Published posts as the model reads posts (a text-only post's item is its caption, as in training)."""
    return PostData(
        users=[post.user for post in posts], items=[post.key or text_item_key(post.caption) for post in posts],
        hashtags=[list(post.hashtags) for post in posts],
        features={m: np.stack([post.features[m] for post in posts]) for m in MODALITIES},
        masks={m: np.array([bool(post.masks.get(m)) for post in posts]) for m in MODALITIES},
        times=np.array([post.time for post in posts], dtype=np.float64))


def _training_store(checkpoint: Checkpoint, checkpoint_path: Path, given: Path | None) -> tuple[Path | None, str]:
    """The store to read (None: none) and, when there is none, why (one line)."""
    if given is not None:
        given = Path(given)
        return (given, "") if given.exists() else (None, f"{given}: no such store (--store)")
    found = checkpoint.find_store()
    if found is not None:
        return found, ""
    tried = checkpoint.store_candidates()
    if not tried:
        return None, f"{checkpoint_path} was trained on posts from no store"
    where = f"at neither {tried[0]} nor {tried[1]}" if len(tried) > 1 else f"not at {tried[0]}"
    return None, f"the store {checkpoint_path} was trained on is {where}; pass it with --store"


def check_clips(clips: list[Path]) -> None:
    """Refuse, before anything loads, a clip that is not there or cannot be read (a
    ClipError naming the first, and how many more)."""
    problems = []
    for clip in clips:
        if not clip.exists():
            problems.append(f"{clip}: no such file")
        elif not clip.is_file():
            problems.append(f"{clip}: not a file")
        else:
            try:
                open(clip, "rb").close()
            except OSError as error:
                problems.append(f"{clip}: cannot read it ({error.strerror})")
    if problems:
        more = f" (and {len(problems) - 1} more clip(s) not found or unreadable)" if len(problems) > 1 else ""
        raise ClipError(problems[0] + more)


def _recorded_sampling(record: dict, checkpoint_path: Path) -> FrameSampling:
    """The frame sampling the checkpoint's store was extracted with, if this phr decodes
    that way: a new clip must be decoded as its training videos were."""
    if set(record) != {f.name for f in fields(FrameSampling)}:
        raise EncoderMismatchError(
            f"{checkpoint_path} was trained on a store decoded by another phr version (frame sampling "
            f"{sorted(record)}); re-extract the videos with this phr and retrain")
    return FrameSampling(**record)


def _content_key(clip: Path) -> tuple[str | None, DecodedClip | None]:
    """The clip's content key, or None and the status that replaces decoding it."""
    if not clip.is_file():
        return None, DecodedClip(None, None, 0.0, Status.MISSING, "file not found")
    try:
        return content_key(clip), None
    except OSError as error:  # e.g. no read permission: reported like any other bad clip
        return None, DecodedClip(None, None, 0.0, Status.UNREADABLE, f"cannot read: {error.strerror}")
