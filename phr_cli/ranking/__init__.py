"""From a trained model to a post's ranked hashtags: the parts summed, scaled and re-ranked.

- `scorer`: the trained model as a scorer of every known hashtag for each post.
- `validation`: the validation halves that calibration and the re-ranker fit and check on.
- `calibration`: one scale per score part, searched on validation.
- `rerank`: gradient-boosted trees that re-order each post's leading hashtags.
- `live`: posts published after training folded into a scorer's counts (serve, refresh, the stream protocol).
- `new_hashtags`: hashtags training never saw, scored by their words' match with the caption.
"""
