"""Answering with a trained checkpoint.

- `recommend`: a new clip → decoded → encoded as the store's videos were → ranked hashtags.
- `explain`: why a hashtag ranks where it does (its score parts, the videos behind them).
- `serve`: the same over HTTP (FastAPI), warm.
- `options`: what `phr serve` is asked (host, token, limits).
- `schema`: the HTTP contract: pydantic models of every request and answer.
- `history`: the journal of published posts (POST /posts) and the model that follows it.
- `inspection`: what a store, a checkpoint or a manifest holds (`phr inspect`).
"""
