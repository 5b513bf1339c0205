"""Test support outside the product package: `support.media` writes synthetic clips.

Importable as `support` wherever `tests/` is on sys.path: pytest puts it there (rootdir
conftest); scripts (bench/, sample_videos/make_samples.py, subprocesses of the tests) add it.
"""
