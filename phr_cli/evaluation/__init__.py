"""Measuring rankings: the paper's protocol and the full ranking, the baselines, the plots.

- `measures`: the metrics' names, their K and the sampled protocol's negatives (no torch).
- `metrics`: P/R/A/F1/nDCG/MAP/MRR@K of a ranking, the sampled and full protocols (docs/evaluation.md).
- `baselines`: popularity (global, user, item, mixed), content kNN, PITF's fitting on validation.
- `significance`: paired t and randomisation tests of the model against each baseline, Holm-corrected.
- `segments`: the metrics by user activity, hashtag frequency and new or seen video; catalogue coverage.
- `runs`: TREC qrels and run files, for trec_eval and ranx.
- `plots`: the training curve and the comparison of methods, as PNG files.
"""
