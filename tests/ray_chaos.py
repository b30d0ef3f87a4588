"""A kind of reward model for the Ray tests, registered in every Ray worker by ``setup``: the pairwise kind
that sleeps a random time before each chunk and, once, exits its process on its first chunk (a crashed
actor). What it does is read from the checkpoint's rmkit settings: ``"chaos": {"delay": seconds,
"crash_once": a file}`` (the first process to create the file exits)."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from rmkit import kinds
from rmkit.kinds.pairwise import PairwiseKind


class ChaosKind(PairwiseKind):
    name = "chaos"

    def score_prepared(self, model: Any, chunk, prepared, reading, stats):
        chaos = model.metadata.get("chaos", {})
        time.sleep(random.uniform(0, chaos.get("delay", 0.0)))
        if chaos.get("crash_once"):
            try:
                os.close(os.open(chaos["crash_once"], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().score_prepared(model, chunk, prepared, reading, stats)


def setup() -> None:
    kinds.register(ChaosKind())
