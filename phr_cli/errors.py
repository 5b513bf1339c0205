"""phr's one error base.

Every error a user can act on derives from `PhrError`; its message is one line that names
the file or option at fault and the fix. The CLI prints that line and exits 1; anything
else that escapes (a torch or h5py error, a bug) keeps its traceback.
"""

from __future__ import annotations


class PhrError(Exception):
    """A problem the user can fix; str(error) is the one-line message."""


class ConfigError(PhrError):
    """An option or configuration value phr cannot run with."""


class DataError(PhrError):
    """The posts cannot serve what was asked (too few of them, too few hashtags)."""


class CheckpointError(PhrError):
    """A checkpoint that cannot be read, or written, or used with this store."""


class EncoderMismatchError(PhrError):
    """Encoders here differ from the ones a store, checkpoint or driver was built with."""
