"""phr: personalised hashtag recommendation for micro-videos (GCN-PHR)."""

__version__ = "0.1.0"
