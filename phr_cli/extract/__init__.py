"""`phr extract`: a folder of posts -> the HDF5 feature store.

- `options`: what the command is asked and what it reports.
- `pipeline`: the command's flow: hash, resume, commit segments, captions, merge.
- `local`: decoding in worker processes, encoding in this one.
- `ray`: decoding and encoding on a Ray cluster (the optional `phr[ray]` extra).
"""

from typing import TYPE_CHECKING, Any

from phr_cli.extract.options import ExtractOptions, ExtractReport, ProgressCallback, VideoOutcome

if TYPE_CHECKING:
    from phr_cli.extract.pipeline import extract

__all__ = ["ExtractOptions", "ExtractReport", "ProgressCallback", "VideoOutcome", "extract"]


def __getattr__(name: str) -> Any:
    """`extract` is imported when first asked for: the options import without the encoders
    (torch), and the CLI reads their defaults."""
    if name == "extract":
        from phr_cli.extract.pipeline import extract

        return extract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
