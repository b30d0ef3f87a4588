"""``rmkit eval``: :mod:`~rmkit.evaluation.run` is the one runner (load, score, write); what differs by kind
of RM (figures, lines, plots, report) is the kind's evaluation (:mod:`rmkit.kinds`), drawn with
:mod:`rmkit.reporting`."""

from rmkit.evaluation.run import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]
