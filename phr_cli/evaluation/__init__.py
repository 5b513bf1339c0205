"""Measuring rankings: the paper's protocol and the full ranking, the baselines, the plots.

- `metrics`: P/R/A@K of a ranking, the sampled and full protocols (docs/evaluation.md).
- `baselines`: popularity (global, user, item, mixed), content kNN, PITF's fitting on validation.
- `plots`: the training curve and the comparison of methods, as PNG files.
"""
