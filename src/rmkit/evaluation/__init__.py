"""``rmkit eval``: :mod:`~rmkit.evaluation.run` is the one runner (load, score, write); what differs by kind
of RM (figures, lines, plots, report) is the kind's evaluation (:mod:`rmkit.kinds`), drawn with
:mod:`rmkit.reporting`. The options are in :mod:`~rmkit.evaluation.config`; the runner (and torch) loads on
first use of ``evaluate``."""

from rmkit import lazy
from rmkit.evaluation.config import EvalConfig

__all__ = ["EvalConfig", "evaluate"]


__getattr__ = lazy(__name__, {"evaluate": "rmkit.evaluation.run"})
