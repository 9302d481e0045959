"""relrec: related-item lists balancing engagement, semantic relevance and popularity bias."""

__version__ = "0.1.0"
