"""Ordering: deciding which transactions form the next block. ``solo`` is the embedded default."""
