"""Pipelines (CONTRACT §2): filter, map, window, dedupe and sample over events."""

from pipelines.pipeline import Pipeline, build_pipeline

__all__ = ["Pipeline", "build_pipeline"]
