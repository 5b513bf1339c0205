"""Malformed metadata gets line-numbered errors; the hashtag parser and the manifest
reader hold their properties on any input (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phr_cli.data.posts import ManifestError, caption_without_hashtags, normalize_hashtag, parse_hashtags, read_posts


def write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name, content, message", [
    ("posts.csv", "clip,owner\na.mp4,ana\n", "posts.csv:1: missing column(s) user, video"),
    ("posts.csv", "video,user,caption\na.mp4,ana,fine\nb.mp4,ben,caf\xe9\n".encode("latin-1"),
     "posts.csv:3: not UTF-8 text (byte 0xe9)"),
    ("posts.jsonl", b'{"video": "a.mp4", "user": "ana"}\n{"video": "b.mp4", "caption": "\xff"}\n',
     "posts.jsonl:2: not UTF-8 text (byte 0xff)"),
    ("posts.csv", "video,user,caption\na.mp4,ana,hi #x\nb.mp4,ben,yo\na.mp4,ana,hi #x\n",
     "posts.csv:4: duplicate of line 2"),
    ("posts.csv", "video,user\n../outside.mp4,ana\n", "posts.csv:2: video path '../outside.mp4' is outside"),
    ("posts.csv", "video,user\n/etc/passwd,ana\n", "posts.csv:2: video path '/etc/passwd' is outside"),
    ("posts.jsonl", '{"video": "a.mp4", "user": "ana"}\n{"video": "a.mp4", "user": \n',
     "posts.jsonl:2: invalid JSON"),
    ("posts.jsonl", '{"video": "a.mp4", "user": "ana"}\n\n["a.mp4", "ana"]\n',
     "posts.jsonl:3: expected a JSON object"),
    ("posts.jsonl", '{"video": "a.mp4", "user": {"id": 3}}\n', "posts.jsonl:1: user must be text, not dict"),
    ("posts.jsonl", '{"video": "a.mp4", "user": "ana", "hashtags": 7}\n',
     "posts.jsonl:1: hashtags must be text or a list of text"),
])
def test_malformed_manifests_get_line_numbered_errors(tmp_path, name, content, message):
    folder = tmp_path / "videos"
    write(folder, name, content)
    with pytest.raises(ManifestError) as error:
        read_posts(folder)
    text = str(error.value)
    assert message in text and str(folder) in text and "\n" not in text


def test_a_video_listed_by_two_users_is_two_posts_and_a_line_numbered_note(tmp_path):
    folder = tmp_path / "videos"
    write(folder, "posts.csv", "video,user,caption\nclip.mp4,ana,mine #a\nclip.mp4,ben,mine too #b\n")
    post_set = read_posts(folder)
    assert [(p.user, p.hashtags) for p in post_set.posts] == [("ana", ["a"]), ("ben", ["b"])]
    assert len(post_set.videos()) == 1
    assert post_set.notices == ["posts.csv:3: clip.mp4 is also posted at line 2, by user 'ben'; "
                                "kept as separate posts sharing one extracted video"]


def test_a_broken_sidecar_names_its_file(tmp_path):
    folder = tmp_path / "videos"
    write(folder, "clip.mp4", b"")
    write(folder, "clip.info.json", '{"uploader": "ana", ')
    with pytest.raises(ManifestError, match=r"clip\.info\.json: unreadable yt-dlp info JSON"):
        read_posts(folder)


# Property-based tests --------------------------------------------------------------------

WORD = re.compile(r"^\w+$")
captions = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
tag_bodies = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd"),
                                            whitelist_characters="_"), min_size=1, max_size=12)


@given(captions)
def test_parsed_hashtags_are_normalised_distinct_words(caption):
    tags = parse_hashtags(caption)
    assert len(tags) == len(set(tags))
    for tag in tags:
        assert tag and WORD.match(tag) and normalize_hashtag(tag) == tag
        assert tag == unicodedata.normalize("NFKC", tag).lower()


@given(captions)
def test_no_hashtag_survives_in_the_text_the_encoder_sees(caption):
    assert not set(parse_hashtags(caption_without_hashtags(caption))) & set(parse_hashtags(caption))


@given(st.lists(tag_bodies, max_size=6), captions)
def test_hashtags_written_into_a_caption_are_found_again(bodies, words):
    expected = list(dict.fromkeys(normalize_hashtag(b) for b in bodies))
    expected = [tag for tag in expected if WORD.match(tag)]  # NFKC can turn a letter into symbols
    caption = " ".join(f"#{tag}" for tag in expected)
    assert parse_hashtags(caption) == expected
    # Words around them add no hashtag of theirs unless they hold a '#'.
    if "#" not in words:
        assert parse_hashtags(f"{words} {caption}") == expected


rows = st.lists(
    st.fixed_dictionaries({
        "video": st.sampled_from(["", "a.mp4", "sub/b.mkv", "c d.webm", "é.mp4"]),
        "user": st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), max_size=10),
        "caption": captions,
        "hashtags": st.lists(tag_bodies, max_size=4),
    }),
    max_size=8,
)


def _expected_posts(written: list[dict]) -> list[tuple]:
    seen, posts = set(), []
    for row in written:
        listed = list(dict.fromkeys(normalize_hashtag(t) for t in row["hashtags"]))
        tags = [t for t in listed if t] or parse_hashtags(row["caption"])
        post = (row["video"] or None, row["user"].strip() or None, row["caption"], tags)
        key = (post[0], post[1], post[2], tuple(tags))
        if key not in seen:
            seen.add(key)
            posts.append(post)
    return posts


def _manifest_rows(post_set) -> list[tuple]:
    return [(p.relpath, p.user, p.caption, p.hashtags) for p in post_set.posts if p.source != "none"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, st.sampled_from(["csv", "jsonl"]))
def test_manifest_rows_read_back_as_written(tmp_path_factory, written, form):
    folder = tmp_path_factory.mktemp("manifest")
    unique = {(r["video"], r["user"].strip(), r["caption"],
               tuple(dict.fromkeys(normalize_hashtag(t) for t in r["hashtags"]))) for r in written}
    if form == "csv":
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, ["video", "user", "caption", "hashtags"])
        writer.writeheader()
        for row in written:
            writer.writerow({**row, "hashtags": " ".join(row["hashtags"])})
        write(folder, "posts.csv", buffer.getvalue())
    else:
        write(folder, "posts.jsonl", "".join(json.dumps(row) + "\n" for row in written))
    if len(unique) < len(written) or any("\x00" in r["caption"] for r in written):
        # Duplicate rows are an error naming the line, never a silent drop.
        try:
            post_set = read_posts(folder)
        except ManifestError as error:
            assert re.search(r"posts\.(csv|jsonl):\d+: ", str(error))
            return
    else:
        post_set = read_posts(folder)
    assert _manifest_rows(post_set) == _expected_posts(written)
