"""The public reward-model benchmarks that ``rmkit eval --suite`` scores as their own code does.

``SUITES`` maps each ``--suite`` name to its :class:`~rmkit.suites.base.Suite` class; :func:`choose` turns
the option (a name, ``auto`` or ``none``) and the data files into the suite of a run, or ``None``. Reading a
suite's files loads no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from rmkit.data import first_record
from rmkit.errors import RMKitError
from rmkit.suites.base import Item, Suite
from rmkit.suites.others import JudgeBench, ProcessBench, RMBench
from rmkit.suites.rewardbench import RewardBench, RewardBench2
from rmkit.suites.vision import MMRLHFRewardBench, MultimodalRewardBench, VLRewardBench

SUITES: dict[str, type[Suite]] = {
    s.name: s
    for s in (RewardBench, RewardBench2, RMBench, JudgeBench, ProcessBench)
    + (VLRewardBench, MultimodalRewardBench, MMRLHFRewardBench)
}
CHOICES = ("auto", "none", *SUITES)

__all__ = ["CHOICES", "SUITES", "Item", "Suite", "choose"]


def choose(option: str, paths: Sequence[str]) -> Suite | None:
    """The suite of a run: the one named; with ``auto`` the one every file's first record unmistakably
    belongs to (``None`` when the files are no benchmark's, or not all the same one's); ``None`` for
    ``none``."""
    if option == "none":
        return None
    if option != "auto":
        if option not in SUITES:
            raise RMKitError(f"unknown suite '{option}': choose one of {', '.join(CHOICES)}")
        return SUITES[option]()
    found = set()
    for path in paths:
        record = first_record(path) or {}
        found.add(next((name for name, s in SUITES.items() if s().recognises(record)), None))
    name = found.pop() if len(found) == 1 else None
    return SUITES[name]() if name else None
