import json
import unicodedata

import pytest

from phr_cli.data.posts import (
    ManifestError,
    caption_without_hashtags,
    find_videos,
    normalize_user,
    parse_hashtags,
    read_posts,
    split_hashtag_field,
)


def test_parse_hashtags_unicode_nfkc_and_order():
    assert parse_hashtags("Été à la #Plage et #café_2 puis #plage") == ["plage", "café_2"]
    assert parse_hashtags("fullwidth ＃Ｔｏｋｙｏ tag") == ["tokyo"]  # noqa: RUF001 - fullwidth input is the point
    assert parse_hashtags("C# is not a tag, nor a#b, but (#yes) is") == ["yes"]


def test_caption_without_hashtags_removes_labels():
    assert caption_without_hashtags("Sunset swim #beach with  friends #fun") == "Sunset swim with friends"


def test_hashtag_field_accepts_spaces_commas_hash_and_lists():
    assert split_hashtag_field("#Beach, sun  fun,,") == ["beach", "sun", "fun"]
    assert split_hashtag_field(["#A", "b", "a"]) == ["a", "b"]
    assert split_hashtag_field(["Hip Hop", "  #New  Wave "]) == ["hip_hop", "new_wave"]
    assert split_hashtag_field(None) == []


def test_csv_manifest_text_only_rows_and_unlisted_videos(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "extra.mkv").write_bytes(b"x")
    (tmp_path / "posts.csv").write_text(
        "video,user,caption,hashtags\n"
        "a.mp4,u1,Hello #World,\n"
        ",u2,Just text #solo,\n"
        "a.mp4,u3,Same video other user,x y\n",
        encoding="utf-8",
    )
    post_set = read_posts(tmp_path)
    first, text_only, second, unlisted = post_set.posts
    assert first.hashtags == ["world"] and first.user == "u1" and first.source == "posts.csv:2"
    assert first.text == "Hello"
    assert text_only.video is None and text_only.hashtags == ["solo"]
    assert second.hashtags == ["x", "y"]  # the field wins over the caption
    assert unlisted.video.name == "extra.mkv" and unlisted.user is None
    assert len(post_set.videos()) == 2


def test_jsonl_manifest(tmp_path):
    rows = [{"video": "v.webm", "user": 7, "caption": "hi", "hashtags": ["#One", "two"]},
            {"user": "u", "caption": "text #only"}]
    (tmp_path / "posts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    posts = read_posts(tmp_path).posts
    assert posts[0].user == "7" and posts[0].hashtags == ["one", "two"]
    assert posts[1].video is None and posts[1].hashtags == ["only"]


def test_manifest_errors_name_file_and_line(tmp_path):
    (tmp_path / "posts.csv").write_text("clip,owner\na.mp4,u\n")
    with pytest.raises(ManifestError, match=r"posts.csv:1: missing column\(s\) user, video"):
        read_posts(tmp_path)
    (tmp_path / "posts.csv").write_text("video,user\n../outside.mp4,u\n")
    with pytest.raises(ManifestError, match=r"posts.csv:2: .*outside"):
        read_posts(tmp_path)
    (tmp_path / "posts.csv").unlink()
    (tmp_path / "posts.jsonl").write_text('{"video": "a.mp4"}\n{broken\n')
    with pytest.raises(ManifestError, match=r"posts.jsonl:2: invalid JSON"):
        read_posts(tmp_path)


def test_yt_dlp_sidecar(tmp_path):
    (tmp_path / "clip [abc].mp4").write_bytes(b"x")
    (tmp_path / "clip [abc].info.json").write_text(json.dumps(
        {"uploader_id": "@maker", "uploader": "Maker", "description": "Trip #Alps", "tags": []}))
    (post,) = read_posts(tmp_path).posts
    assert post.user == "@maker" and post.hashtags == ["alps"] and post.source == "sidecar"
    (tmp_path / "clip [abc].info.json").write_text(json.dumps(
        {"uploader": "Maker", "description": "Trip #Alps", "tags": ["Snow", "ski"]}))
    (post,) = read_posts(tmp_path).posts
    assert post.user == "Maker" and post.hashtags == ["snow", "ski"]


def test_find_videos_is_recursive_and_container_agnostic(tmp_path):
    for name in ("a.mp4", "b.MKV", "deep/c.webm", "deep/er/d.avi", "notes.txt", "e.info.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_videos(tmp_path)] == ["a.mp4", "b.MKV", "c.webm", "d.avi"]


def test_manifest_times_are_unix_seconds_from_iso_or_numbers(tmp_path):
    rows = [{"user": "u", "caption": "a #x", "time": "2024-05-01T12:00:00+02:00"},
            {"user": "u", "caption": "b #x", "time": "2024-05-01T10:00:00Z"},
            {"user": "u", "caption": "c #x", "time": "2024-05-01"},
            {"user": "u", "caption": "d #x", "time": 1714557600},
            {"user": "u", "caption": "e #x"}]
    (tmp_path / "posts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    times = [post.time for post in read_posts(tmp_path).posts]
    assert times == [1714557600.0, 1714557600.0, 1714521600.0, 1714557600.0, None]
    (tmp_path / "posts.jsonl").unlink()
    (tmp_path / "posts.csv").write_text("video,user,caption,time\n,u,a #x,1714557600.5\n,u,b #x,\n")
    assert [post.time for post in read_posts(tmp_path).posts] == [1714557600.5, None]


def test_an_unreadable_time_names_its_line(tmp_path):
    (tmp_path / "posts.csv").write_text("video,user,caption,time\n,u,a #x,2024-05-01\n,u,b #x,last week\n")
    with pytest.raises(ManifestError, match=r"posts.csv:3: time 'last week' is neither ISO 8601"):
        read_posts(tmp_path)
    (tmp_path / "posts.csv").unlink()
    (tmp_path / "posts.jsonl").write_text('{"user": "u", "caption": "#x", "time": true}\n')
    with pytest.raises(ManifestError, match=r"posts.jsonl:1: time True"):
        read_posts(tmp_path)


@pytest.mark.parametrize(("info", "expected"), [
    ({"timestamp": 1714557600, "upload_date": "20200101"}, 1714557600.0),
    ({"upload_date": "20240501"}, 1714521600.0),
    ({"upload_date": "2024-05"}, None),
    ({}, None),
])
def test_sidecar_time_is_the_timestamp_else_the_upload_date(tmp_path, info, expected):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "clip.info.json").write_text(json.dumps({"uploader": "Maker", **info}))
    (post,) = read_posts(tmp_path).posts
    assert post.time == expected


NFD_ZOE = unicodedata.normalize("NFD", "zoë")


def test_user_ids_are_normalised_like_hashtags_in_manifests_and_sidecars(tmp_path):
    assert NFD_ZOE != "zoë" and normalize_user(NFD_ZOE) == "zoë" and normalize_user(" alice ") == "alice"
    assert normalize_user("  ") is None and normalize_user(None) is None
    csv_dir, jsonl_dir, sidecar_dir = (tmp_path / name for name in ("csv", "jsonl", "sidecar"))
    for folder in (csv_dir, jsonl_dir, sidecar_dir):
        folder.mkdir()
    (csv_dir / "posts.csv").write_text(f"video,user,caption\n,{NFD_ZOE},a #x\n, alice ,b #y\n", encoding="utf-8")
    (jsonl_dir / "posts.jsonl").write_text(json.dumps({"user": NFD_ZOE, "caption": "a #x"}) + "\n"
                                           + json.dumps({"user": " alice", "caption": "b #y"}) + "\n")
    (sidecar_dir / "a.mp4").write_bytes(b"x")
    (sidecar_dir / "a.info.json").write_text(json.dumps({"uploader_id": f" {NFD_ZOE} ", "description": "#x"}))
    assert [p.user for p in read_posts(csv_dir).posts] == ["zoë", "alice"]
    assert [p.user for p in read_posts(jsonl_dir).posts] == ["zoë", "alice"]
    assert [p.user for p in read_posts(sidecar_dir).posts] == ["zoë"]


def test_two_manifests_in_one_folder_are_an_error_naming_both(tmp_path):
    (tmp_path / "posts.csv").write_text("video,user,caption\n,ana,a #x\n")
    (tmp_path / "posts.jsonl").write_text(json.dumps({"user": "ben", "caption": "b #y"}) + "\n")
    with pytest.raises(ManifestError, match=r"both posts\.csv and posts\.jsonl"):
        read_posts(tmp_path)
