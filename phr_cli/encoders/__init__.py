"""Feature encoders: ResNet50 (visual), VGGish (acoustic), MiniLM + PCA (textual)."""
