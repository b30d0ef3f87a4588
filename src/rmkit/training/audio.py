"""``rmkit train`` on preference pairs with audio: a Qwen2-Audio RM (:mod:`rmkit.alm`) through the vision
task's loop (:mod:`rmkit.training.vision`), its clips in place of images: each pair's clips through the audio
encoder once a micro-batch, ``--freeze audio,projector`` matched to ``model.audio_tower.`` and
``model.multi_modal_projector.`` and counted by module."""

from __future__ import annotations

from typing import Any

from rmkit import kinds
from rmkit.data import RowCounts
from rmkit.errors import RMKitError
from rmkit.training.config import TrainConfig
from rmkit.training.parallel import Dist
from rmkit.training.vision import VisionPairTask


class AudioPairTask(VisionPairTask):
    """Preference pairs with audio (module docstring)."""

    kind: kinds.Kind = kinds.AudioKind()

    def prepare(self, config: TrainConfig, stats: RowCounts, d: Dist) -> tuple[Any, Any, Any, str | None]:
        if config.lora or d.world > 1 or config.loss != "bt" or config.packing == "on":
            raise RMKitError(
                "rmkit train on audio runs in one process with the bt loss, without LoRA or --packing "
                "on (not yet: those are built for images)"
            )
        return super().prepare(config, stats, d)

    def load(self, config: TrainConfig) -> Any:
        from rmkit.alm import AudioRewardModel

        return AudioRewardModel.from_pretrained(config.model, allow_pickle=config.allow_pickle)
