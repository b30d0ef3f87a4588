"""AudioRewardModel: Qwen2-Audio read as a reward model of audio with text (align-anything's TA2T RM).

The model is the checkpoint's own ``Qwen2AudioForConditionalGeneration`` (unmodified, its LM head unused)
plus a linear value head on the language model's last hidden state, read at each sequence's last real token
(found from the attention mask, so either padding gives the same score): the layout and readout of
:class:`rmkit.vlm.VisionRewardModel`, which this class is, its images being clips::

    score = v_head.summary.weight · h[last real token] + v_head.summary.bias

A checkpoint is the model's directory (its weights, tokenizer and ``preprocessor_config.json``, the
``WhisperFeatureExtractor``) plus ``value_head.safetensors``; align-anything's ``score_head.weight`` among the
model's weights is read too. rmkit writes the first, with ``"kind": "audio"`` in its settings.

A row's clips (:mod:`rmkit.data.audio_processing`: log-mel features, each clip's real frames) run through
the audio encoder (``model.audio_tower``, Whisper-shaped) and the projector (``model.multi_modal_projector``)
once an example, when the first batch that needs them comes, and their features stay until the example's last
answer has run (:meth:`rmkit.vlm.VisionRewardModel.score_rows`). Each clip's features fill its ``<|AUDIO|>``
tokens, as transformers' ``Qwen2AudioModel.forward`` does with ``input_features`` and
``feature_attention_mask`` (a test checks the scores equal that forward's); the language model then runs on
the embeddings, positions counted from the mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

from rmkit.data.audio_processing import AudioTokenizer, tokens_of
from rmkit.data.processing import ImageTokens
from rmkit.errors import RMKitError
from rmkit.modeling import RewardOutput
from rmkit.runtime import resolve_device, resolve_dtype
from rmkit.vlm import VisionRewardModel


class AudioFamily:
    """What Qwen2-Audio is made of, in the terms :class:`rmkit.vlm.VisionRewardModel` asks: the module names of
    its encoder and projector (``parts``: what ``--freeze audio,projector`` stops), its clips' tokens, and
    their features."""

    vision, projector = "model.audio_tower.", "model.multi_modal_projector."
    parts = {"audio": vision, "projector": projector}

    def tokens(self, config: Any, processor: Any, tokenizer: Any) -> ImageTokens:
        return tokens_of(int(config.audio_token_id))

    def features(self, model: Any, frames: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """One (tokens, H) tensor a clip from the encoder and projector: ``frames`` (N·window, mel) are the
        clips' log-mel features frames first, ``lengths`` (N,) their real frames (``feature_attention_mask``'s
        sums). The encoder sees each clip's padding frames masked, as in transformers' forward."""
        tower = model.audio_tower
        window = tower.config.max_source_positions * tower.conv1.stride[0] * tower.conv2.stride[0]
        mel = frames.reshape(-1, window, frames.shape[-1]).transpose(1, 2)
        after_conv, counts = tower._get_feat_extract_output_lengths(lengths)
        positions = (window - 2) // 2 + 1
        mask = (torch.arange(positions, device=lengths.device)[None] < after_conv[:, None]).long()
        dummy = torch.zeros((len(mel), positions, 1), dtype=mel.dtype, device=mel.device)
        from transformers.masking_utils import create_bidirectional_mask

        attention = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask)
        out = model.multi_modal_projector(tower(mel, attention_mask=attention).last_hidden_state)
        return [out[i, :n] for i, n in enumerate(counts.tolist())]

    def pixels(self, patches: list[Any]) -> Any:
        """The log-mel frames of a batch from each row's (its clips' frames, one array a row), in row order."""
        import numpy as np

        return np.concatenate(patches)


AUDIO = AudioFamily()


class AudioRewardModel(VisionRewardModel):
    """Qwen2-Audio with a value head (module docstring), its tokenizer, feature extractor and rmkit metadata."""

    auto_class = Qwen2AudioForConditionalGeneration
    families = {"qwen2_audio": AUDIO}
    kind, preparer = "audio", AudioTokenizer

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
        **_: Any,
    ) -> AudioRewardModel:
        """The Qwen2-Audio RM at ``path`` (module docstring); a model without a value head gets a fresh one (to
        train). The chat template is the tokenizer's, else the processor's (transformers' default for
        Qwen2-Audio: ``Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>`` a clip)."""
        target = resolve_device(device) if device is not None else torch.device("cpu")
        config = AutoConfig.from_pretrained(str(path))
        if config.model_type not in cls.families:
            raise RMKitError(f"{path}: rmkit reads qwen2_audio as an audio RM, not {config.model_type}")
        model = Qwen2AudioForConditionalGeneration.from_pretrained(
            str(path), dtype=resolve_dtype(dtype, target)
        )
        processor = Qwen2AudioProcessor.from_pretrained(str(path))
        tokenizer = processor.tokenizer
        tokenizer.chat_template = tokenizer.chat_template or processor.chat_template
        extractor = processor.feature_extractor
        return cls.assembled(
            Path(path), model, tokenizer, extractor, allow_pickle=allow_pickle, device=device
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        token_scores: bool = False,
        right_padded: bool | None = None,
        image_features: list[torch.Tensor] | None = None,
    ) -> RewardOutput:
        """End scores (B,) of a padded batch (either side) and its clips, in the order their tokens come:
        ``pixel_values`` their features (N·window, mel) and ``image_grid_thw`` their real frames (N,), the names
        :meth:`batch` gives them; ``image_features`` (one (tokens, H) tensor a clip, from :meth:`encode`)
        stand for the features: the encoder then does not run. ``scores`` (B, L) with ``token_scores``."""
        inner = self.model.model
        embeds = inner.get_input_embeddings()(input_ids)
        if image_grid_thw is not None:
            if image_features is None:
                image_features = self.family.features(inner, pixel_values, image_grid_thw)
            at = input_ids == self.tokens.image_id
            clips = torch.cat(list(image_features)).to(embeds.dtype)
            if int(at.sum()) != len(clips):
                raise RMKitError(f"{int(at.sum())} audio tokens for {len(clips)} audio features")
            embeds = embeds.masked_scatter(at.unsqueeze(-1), clips)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # either padding: the same positions
        hidden = inner.language_model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        return self.read_out(hidden, attention_mask, token_scores)
