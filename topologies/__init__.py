"""Networks: where ranks sit, how messages travel, and what collectives cost.

This package knows nothing about transformers. It answers one narrow question
for the layers above it (``NetworkModel``): how long does a collective (or a
point-to-point transfer) take for the group of ranks that one parallel
dimension forms in a job of a given shape.
"""

from .interface import CollectiveCost, JobShape, NetworkModel, group_geometry

__all__ = ["CollectiveCost", "JobShape", "NetworkModel", "group_geometry"]
