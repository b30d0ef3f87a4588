"""``rmkit eval``: :mod:`~rmkit.evaluation.run` scores the pairs and assembles the figures,
:mod:`~rmkit.evaluation.report` writes the tables and ``report.md``, :mod:`~rmkit.evaluation.plots` draws
the PNGs."""

from rmkit.evaluation.run import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]
