"""``rmkit train``: train a reward model from preference pairs.

:mod:`~rmkit.training.loop` reads top to bottom; the options are in :mod:`~rmkit.training.config`, the
pairs and batches in :mod:`~rmkit.training.data`, one step, the held-out evaluation, the optimiser and
schedule in :mod:`~rmkit.training.step`, checkpoints in :mod:`~rmkit.training.checkpoint`, several
processes (DDP, FSDP2) in :mod:`~rmkit.training.parallel`, logs and trackers in
:mod:`~rmkit.training.tracking`. The loop (and torch) loads on first use of ``train``.
"""

from rmkit import lazy
from rmkit.training.config import TrainConfig

__all__ = ["TrainConfig", "train"]


__getattr__ = lazy(__name__, {"train": "rmkit.training.loop"})
