"""Evaluation: ShapesEval (:mod:`difflab.eval.shapes`, a weight-free GenEval on the shapes world);
FID, KID, precision/recall and IS on pluggable features (:mod:`difflab.eval.metrics`,
:mod:`difflab.eval.features`)."""
