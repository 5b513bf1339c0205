"""Micro-video posts: finding videos, reading their metadata, parsing hashtags.

Metadata comes, in order, from a manifest (`posts.csv` / `posts.jsonl` in the folder), a
yt-dlp `<stem>.info.json` sidecar, or nothing (a content-only video). A post's time (for the
time split) is a manifest's `time` field (ISO 8601 or Unix seconds) or a sidecar's
`timestamp` / `upload_date`, held as Unix seconds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from phr_cli.errors import PhrError

MANIFEST_NAMES = ("posts.csv", "posts.jsonl")
SIDECAR_SUFFIX = ".info.json"

# Suffixes of the video containers FFmpeg demuxes; a manifest may name any other file.
VIDEO_SUFFIXES = frozenset({
    ".3g2", ".3gp", ".asf", ".avi", ".divx", ".dv", ".f4v", ".flv", ".h264", ".hevc", ".m2t",
    ".m2ts", ".m2v", ".m4v", ".mkv", ".mov", ".mp4", ".mpe", ".mpeg", ".mpg", ".mts", ".mxf",
    ".nut", ".ogv", ".qt", ".rm", ".rmvb", ".ts", ".vob", ".webm", ".wmv", ".y4m",
})

# A hashtag starts after a non-word character; its body is Unicode letters, digits and _.
HASHTAG_PATTERN = re.compile(r"(?<!\w)#(\w+)")


class ManifestError(PhrError):
    """A manifest line that cannot be read; the message starts with `file:line:`."""


class NotAFolderError(PhrError):
    """The videos argument is not a folder."""


@dataclass
class Post:
    """One post: a video (or none, for a text-only post), who posted it, what they wrote."""

    video: Path | None
    user: str | None
    caption: str
    hashtags: list[str]
    source: str  # where the metadata came from: "posts.csv:12", "sidecar", "none"
    relpath: str | None = None  # the video's path relative to the folder, for the store
    time: float | None = None  # when it was posted, Unix seconds; None when the metadata has none

    @property
    def text(self) -> str:
        """The caption as the text encoder sees it: hashtags removed so labels never leak."""
        return caption_without_hashtags(self.caption)


@dataclass
class PostSet:
    root: Path
    posts: list[Post] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # "posts.csv:9: ..." worth a user's look

    def videos(self) -> list[Path]:
        """Distinct video files referenced by the posts, in first-seen order."""
        return list(dict.fromkeys(p.video for p in self.posts if p.video is not None))


def normalize_hashtag(tag: str) -> str:
    """NFKC, lower case, no '#'; inner spaces (a listed tag like "hip hop") become '_'."""
    return "_".join(unicodedata.normalize("NFKC", tag).lstrip().lstrip("#").lower().split())


def normalize_user(user: object) -> str | None:
    """A user id as phr compares it: NFC, trimmed (an NFD 'zoë' or ' alice' is the same user);
    None when nothing is left."""
    if user is None:
        return None
    return unicodedata.normalize("NFC", str(user)).strip() or None


def parse_hashtags(text: str) -> list[str]:
    """Hashtags in a caption, normalised, without duplicates, in order of appearance."""
    found = HASHTAG_PATTERN.findall(unicodedata.normalize("NFKC", text))
    return list(dict.fromkeys(normalize_hashtag(tag) for tag in found))


def caption_without_hashtags(caption: str) -> str:
    text = unicodedata.normalize("NFKC", caption)
    # Repeat: removing "#a" from "#a#a" exposes a second "#a" that is now a hashtag.
    while (stripped := HASHTAG_PATTERN.sub(" ", text)) != text:
        text = stripped
    return " ".join(text.split())


def split_hashtag_field(value: str | list | None) -> list[str]:
    """A `hashtags` field: a list (JSONL) or a space- or comma-separated string (CSV)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else re.split(r"[\s,]+", value)
    tags = (normalize_hashtag(str(item)) for item in items)
    return list(dict.fromkeys(tag for tag in tags if tag))


def post_hashtags(caption: str, field_value: str | list | None) -> list[str]:
    """The `hashtags` field when given, else the hashtags parsed from the caption."""
    listed = split_hashtag_field(field_value)
    return listed if listed else parse_hashtags(caption)


def parse_time(value: str | float | None) -> float | None:
    """Unix seconds from Unix seconds (a number or numeric text) or ISO 8601 text.

    ISO times without an offset are read as UTC, so a manifest means the same on every
    machine. None or empty text: no time. Raises ValueError (TypeError) for other text (values).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"a time is a number or text, not {type(value).__name__}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            # Python before 3.11 reads no "Z" suffix; it means UTC.
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seconds = moment.timestamp()
    if not math.isfinite(seconds):
        raise ValueError("not a finite time")
    return seconds


def find_videos(root: Path) -> list[Path]:
    """Video files below root, recursively, sorted; symlinked folders are not followed."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file()
    )


def read_posts(root: Path) -> PostSet:
    """Every post in a folder: manifest rows, then videos the manifest does not name."""
    root = Path(root)
    if not root.is_dir():
        raise NotAFolderError(f"{root}: not a folder of videos")
    manifests = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
    if len(manifests) > 1:
        raise ManifestError(f"{root}: both {' and '.join(m.name for m in manifests)} are here; "
                            "phr reads one manifest a folder: merge them into one")
    manifest = manifests[0] if manifests else None
    posts = read_manifest(manifest, root) if manifest else []
    notices = _shared_videos(posts)
    named = {p.video.resolve() for p in posts if p.video is not None}
    for video in find_videos(root):
        if video.resolve() in named:
            continue
        posts.append(read_sidecar(video, root))
    return PostSet(root=root, posts=posts, notices=notices)


def read_manifest(path: Path, root: Path) -> list[Post]:
    """A manifest's posts; any line that cannot be read raises ManifestError naming it."""
    text = _manifest_text(path)
    rows = _jsonl_rows(path, text) if path.suffix == ".jsonl" else _csv_rows(path, text)
    posts: list[Post] = []
    first_line: dict[tuple, int] = {}
    for line, row in rows:
        post = _manifest_post(row, path, line, root)
        identity = (post.video, post.user, post.caption, tuple(post.hashtags))
        if identity in first_line:
            raise ManifestError(f"{path}:{line}: duplicate of line {first_line[identity]}; "
                                "remove one of them")
        first_line[identity] = line
        posts.append(post)
    return posts


def _shared_videos(posts: list[Post]) -> list[str]:
    """A file in several rows is legitimate (a repost) but often a mistake: say where."""
    first: dict[Path, Post] = {}
    notices = []
    for post in posts:
        if post.video is None:
            continue
        if post.video in first:
            earlier = first[post.video]
            who = f"by user {post.user!r}" if post.user != earlier.user else "again by the same user"
            notices.append(f"{post.source}: {post.relpath} is also posted at line "
                           f"{earlier.source.rsplit(':', 1)[1]}, {who}; kept as separate posts "
                           "sharing one extracted video")
        else:
            first[post.video] = post
    return notices


def _manifest_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ManifestError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}); "
                            "save the manifest as UTF-8") from None


def _csv_rows(path: Path, text: str):
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = {"video", "user"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        raise ManifestError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def _jsonl_rows(path: Path, text: str):
    for line, row_text in enumerate(text.splitlines(), start=1):
        if not row_text.strip():
            continue
        try:
            row = json.loads(row_text)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{path}:{line}: invalid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{line}: expected a JSON object")
        yield line, row


def _manifest_post(row: dict, path: Path, line: int, root: Path) -> Post:
    where = f"{path}:{line}"
    for name in ("video", "user", "caption"):
        if not isinstance(row.get(name), (str, int, type(None))):
            raise ManifestError(f"{where}: {name} must be text, not {type(row[name]).__name__}")
    tags = row.get("hashtags")
    if not (tags is None or isinstance(tags, str)
            or (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags))):
        raise ManifestError(f"{where}: hashtags must be text or a list of text")
    try:
        time = parse_time(row.get("time"))
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: time {row.get('time')!r} is neither ISO 8601 "
                            "(2024-05-01T12:00:00+02:00) nor Unix seconds") from None
    caption = str(row.get("caption") or "")
    user = normalize_user(row.get("user"))
    video_field = str(row.get("video") or "").strip()
    video = None
    if video_field:
        video = (root / video_field).resolve()
        if not video.is_relative_to(root.resolve()):
            raise ManifestError(f"{where}: video path {video_field!r} is outside {root}")
    return Post(
        video=video,
        user=user,
        caption=caption,
        hashtags=post_hashtags(caption, tags),
        source=f"{path.name}:{line}",
        relpath=video_field or None,
        time=time,
    )


def read_sidecar(video: Path, root: Path) -> Post:
    """A video's yt-dlp `.info.json`, or an anonymous content-only post without one."""
    relpath = video.relative_to(root).as_posix()
    sidecar = video.with_name(video.stem + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return Post(video=video, user=None, caption="", hashtags=[], source="none", relpath=relpath)
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{sidecar}: unreadable yt-dlp info JSON ({error})") from None
    user = normalize_user(info.get("uploader_id") or info.get("uploader"))
    caption = str(info.get("description") or "")
    return Post(
        video=video,
        user=user,
        caption=caption,
        hashtags=post_hashtags(caption, info.get("tags")),
        source="sidecar",
        relpath=relpath,
        time=_sidecar_time(info),
    )


def _sidecar_time(info: dict) -> float | None:
    """yt-dlp's `timestamp` (Unix seconds), else its `upload_date` (YYYYMMDD, UTC midnight)."""
    timestamp = info.get("timestamp")
    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        return float(timestamp)
    date = info.get("upload_date")
    if isinstance(date, str) and len(date) == 8 and date.isdigit():
        try:
            return datetime.strptime(date, "%Y%m%d").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:  # a malformed date is no time, as a missing one
            return None
    return None
