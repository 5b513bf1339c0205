"""Posts and their features, from a folder of videos to a split and a training graph.

- `posts`: manifests (`posts.csv`, `posts.jsonl`) and yt-dlp sidecars → posts; hashtag parsing.
- `statuses`: what became of each video (`ok`, `no_audio`, `corrupt`, …).
- `decode`: PyAV decoding of keyframes and audio, under time and memory limits.
- `decode_options`: how decoding samples a clip and the limits it keeps (without PyAV).
- `store`: the HDF5 feature store, the only module that touches h5py.
- `folders`: the folders a store's posts came from: list, re-root, drop (`phr store`).
- `graph`: the store's trainable posts, their 8:1:1 split and the user–hashtag–video graph.
- `cases`: a split's test cases (user, video, known ground-truth hashtags).
- `provenance`: what a trained model records of its data, and finding those posts again.
- `dataset`: a store's posts → split → graph → cases, as train, tune and evaluate use them.
- `journal`: posts published after training (`phr serve`'s POST /posts), durable in SQLite; and
  `journal_postgres`, the same on PostgreSQL for replicas; taken into the store on request.
"""
