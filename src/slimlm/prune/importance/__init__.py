"""Importance scores: one function per criterion, returning a score per weight, channel, head or layer.

Scores never touch the model's structure; `slimlm.prune.structure` decides what is coupled and
`slimlm.prune.surgery` removes it.
"""

from slimlm.prune.importance.scores import magnitude, outlier_ratio, owl_allocation, wanda

__all__ = ["magnitude", "outlier_ratio", "owl_allocation", "wanda"]
