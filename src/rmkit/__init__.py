"""rmkit: reward models for RLHF. Train from preferences, score data sets, evaluate, serve."""

__version__ = "0.1.0"

from rmkit.errors import DataError, RMKitError  # noqa: E402
from rmkit.modeling import RewardModel, RewardOutput  # noqa: E402

__all__ = ["DataError", "RMKitError", "RewardModel", "RewardOutput", "__version__"]
