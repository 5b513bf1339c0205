"""`phr extract`: a folder of posts -> the HDF5 feature store.

- `options`: what the command is asked and what it reports.
- `pipeline`: the command's flow: hash, resume, commit segments, captions, merge.
- `local`: decoding in worker processes, encoding in this one.
- `ray`: decoding and encoding on a Ray cluster (the optional `phr[ray]` extra).
"""

from phr_cli.extract.options import ExtractOptions, ExtractReport, ProgressCallback, VideoOutcome
from phr_cli.extract.pipeline import extract

__all__ = ["ExtractOptions", "ExtractReport", "ProgressCallback", "VideoOutcome", "extract"]
