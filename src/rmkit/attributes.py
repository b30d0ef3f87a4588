"""Multi-attribute reward models: one output per attribute (``num_labels = K``, the names in ``id2label``)
and one score, the attributes' weighted sum.

The weights come from the caller (``--weights helpfulness=1,verbosity=-0.2``), else from the checkpoint's
rmkit metadata (``"weights"``), else every attribute counts the same (1/K each, the mean). An attribute a
weight names that the model lacks is an error; one it leaves out weighs 0.
"""

from __future__ import annotations

from typing import Any

import torch

from rmkit.errors import RMKitError


def attribute_names(config: Any) -> list[str]:
    """The attributes of a K-output head (K > 1) in output order; ``[]`` for a one-output RM."""
    k = int(getattr(config, "num_labels", 1) or 1)
    if k == 1:
        return []
    labels = getattr(config, "id2label", None) or {}
    return [str(labels.get(i, labels.get(str(i), f"LABEL_{i}"))) for i in range(k)]


def combination(names: list[str], weights: dict[str, Any] | None) -> torch.Tensor:
    """The (K,) weights of ``names``' outputs in the one score (the mean when none are given)."""
    if not names:
        return torch.ones(1)
    if not weights:
        return torch.full((len(names),), 1.0 / len(names))
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise RMKitError(
            f"--weights names {', '.join(unknown)}, which this model does not score (it has {', '.join(names)})"
        )
    try:
        return torch.tensor([float(weights.get(n, 0.0)) for n in names])
    except (TypeError, ValueError):
        raise RMKitError(f"--weights must map attribute names to numbers, got {weights}") from None
