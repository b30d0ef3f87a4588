"""rmkit: reward models for RLHF. Train from preferences, score data sets, evaluate, serve."""

__version__ = "0.1.0"

from rmkit.errors import DataError, RMKitError  # noqa: E402
from rmkit.modeling import RewardModel, RewardOutput  # noqa: E402

__all__ = [
    "DataError",
    "EvalConfig",
    "RMKitError",
    "RewardModel",
    "RewardOutput",
    "ScoreConfig",
    "TrainConfig",
    "__version__",
    "evaluate",
    "score",
    "train",
]


def __getattr__(name: str):
    # The training loop is imported on first use, so ``import rmkit`` stays light.
    if name in ("train", "TrainConfig"):
        from rmkit import training

        return getattr(training, name)
    if name in ("evaluate", "EvalConfig"):
        from rmkit import evaluation

        return getattr(evaluation, name)
    if name in ("score", "ScoreConfig"):
        from rmkit import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'rmkit' has no attribute {name!r}")
