"""Feature encoders: ResNet50 (visual), VGGish (acoustic), MiniLM + PCA (textual).

- `registry`: every encoder declared once (weights, source, hash, preprocessing, width).
- `visual`: torchvision's ResNet50, 2048-d per frame.
- `audio`: VGGish's log-mel front end and network, 128-d per 0.96 s example.
- `text`: all-MiniLM-L6-v2 sentence embeddings, reduced to 100-d by PCA.
- `pipeline`: the three as one: decoded clips in, a store row per video out.
"""
