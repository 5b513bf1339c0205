"""Making and judging a checkpoint.

- `config`: training options (the model's own live in `model.config`), and options by name.
- `train`: BPR training with model selection on validation; PITF, calibration, re-ranker after.
- `seeds`: one training per seed (`phr train --seeds`), each to its own checkpoint.
- `checkpoint`: the file `phr train` writes and every later command reads.
- `distributed`: several processes (torchrun) training one model.
- `tune`: Optuna's search over model and training options; a study read back (`phr inspect`).
- `comparison`: a checkpoint against the baselines on its own split (`phr evaluate`).
- `stream`: the stream protocol: test posts scored in time order, each folded in once scored.
- `warm_start`: a training begun from an earlier checkpoint's learned parameters (`phr train --warm-start`).
- `unseen`: hashtags training never saw, ranked beside the known ones (`phr evaluate --unseen-hashtags`).
- `refresh`: a checkpoint's counts brought up to date with its store's new posts (`phr train --refresh`).
"""
