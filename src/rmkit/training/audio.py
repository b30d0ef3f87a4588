"""``rmkit train`` on preference pairs with audio: a Qwen2-Audio RM (:mod:`rmkit.alm`) through the vision
task's loop (:mod:`rmkit.training.vision`), its clips in place of images: each pair's clips through the audio
encoder once a micro-batch, ``--freeze audio,projector`` matched to ``model.audio_tower.`` and
``model.multi_modal_projector.`` and counted by module."""

from __future__ import annotations

from typing import Any

from rmkit import kinds
from rmkit.training.config import TrainConfig
from rmkit.training.vision import VisionPairTask


class AudioPairTask(VisionPairTask):
    """Preference pairs with audio (module docstring)."""

    kind: kinds.Kind = kinds.AudioKind()

    def load(self, config: TrainConfig) -> Any:
        from rmkit.alm import AudioRewardModel

        return AudioRewardModel.from_pretrained(config.model, allow_pickle=config.allow_pickle)
