"""Evaluation: ShapesEval (:mod:`difflab.eval.shapes`, a weight-free GenEval on the shapes world)."""
