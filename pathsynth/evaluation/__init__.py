"""Evaluation: ``metrics`` (library calls on arrays), ``protocol`` (small stages), ``report`` (PNG, markdown)."""

from .protocol import RealSplit, evaluate_classifier, evaluate_generator, load_evaluator, realism_point

__all__ = ["RealSplit", "evaluate_classifier", "evaluate_generator", "load_evaluator", "realism_point"]
