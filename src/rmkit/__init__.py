"""rmkit: reward models for RLHF. Train from preferences, score data sets, evaluate, serve."""

import importlib

from rmkit.errors import DataError, RMKitError
from rmkit.version import __version__

__all__ = [
    "DataError",
    "EvalConfig",
    "Judge",
    "RMKitError",
    "RankConfig",
    "RewardModel",
    "RewardOutput",
    "ScoreConfig",
    "TrainConfig",
    "__version__",
    "evaluate",
    "load_judge",
    "rank",
    "reward_function",
    "score",
    "serve",
    "train",
]


# The model and the jobs are imported on first use, so ``import rmkit`` (and ``rmkit --help``) stays light:
# torch and transformers load when a model does.
_LAZY = {
    "RewardModel": "rmkit.modeling",
    "RewardOutput": "rmkit.modeling",
    "train": "rmkit.training",
    "TrainConfig": "rmkit.training",
    "evaluate": "rmkit.evaluation",
    "EvalConfig": "rmkit.evaluation",
    "score": "rmkit.jobs.score",
    "ScoreConfig": "rmkit.jobs.score",
    "rank": "rmkit.jobs.rank",
    "RankConfig": "rmkit.jobs.rank",
    "serve": "rmkit.serving",
    "reward_function": "rmkit.serving",
    "Judge": "rmkit.data.judging",
    "load_judge": "rmkit.judges",
}


def lazy(package: str, names: dict[str, str]):
    """A package's ``__getattr__`` that imports ``names[name]`` (a module) on the first use of ``name``."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy(__name__, _LAZY)
