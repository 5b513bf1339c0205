"""The live history of a serving process: posts published since training, durable in the
journal (data/journal.py) and folded into the recommender's model (ranking/live.py).

Every process (a worker of `--workers`, a replica on another machine) holds its own model
and reads the one journal. On start it replays every journal post the checkpoint was not
trained on; after each post it records, and before a ranking when `POLL_INTERVAL` has
passed since it last looked, it folds in what any process appended since. Folding in and
ranking both run on the process's device thread, so a ranking never sees half a post.
"""

from __future__ import annotations

import time

from phr_cli.data.journal import Journal, LivePost
from phr_cli.serving.recommend import Recommender

# Seconds between looks at the journal before a ranking: a post another process recorded is
# ranked with this long after it was acknowledged, at most (plus its fold-in).
POLL_INTERVAL = 0.25


class LiveHistory:
    """One journal and the recommender whose model follows it."""

    def __init__(self, journal: Journal, recommender: Recommender) -> None:
        self.journal, self.recommender = journal, recommender
        self.sequence = 0  # the last journal sequence number folded in (or skipped)
        self.folded = 0  # journal posts folded in by this process
        self._looked = -float("inf")

    def record(self, post: LivePost) -> tuple[int, bool]:
        """Write a post durably (any thread): its sequence number, and whether it is new."""
        return self.journal.append(post)

    def catch_up(self) -> int:
        """Fold in every journal post after the last one seen but those the checkpoint was
        trained on (the device thread only); how many were folded in."""
        self._looked = time.monotonic()
        found = self.journal.read(self.sequence)
        if not found:
            return 0
        self.sequence = found[-1][0]
        trained = self.recommender.trained_journal_ids
        posts = [post for _, post in found if post.id not in trained]
        self.recommender.fold_in(posts)
        self.folded += len(posts)
        return len(posts)

    def catch_up_if_due(self) -> None:
        if time.monotonic() - self._looked >= POLL_INTERVAL:
            self.catch_up()

    def close(self) -> None:
        self.journal.close()
