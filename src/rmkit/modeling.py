"""RewardModel: a transformer backbone with a one-output score head.

An rmkit RM *is* a Hugging Face ``AutoModelForSequenceClassification`` with ``num_labels=1``; this class
wraps one with its tokenizer and adds what reward modelling needs:

- ``forward`` returns per-token ``scores`` (B×L), the sequence score ``end_scores`` (B) and ``end_index``.
  For decoder models (a linear ``score`` head on every position: Llama, Qwen, Mistral, GPT-2, ...) the
  sequence score is read at the last position whose attention mask is 1, never by comparing ids with
  ``pad_token_id`` (with pad = eos that comparison reads one token early). Encoders (BERT, RoBERTa, ...)
  read it where their own classification head does, the first token, which attends to the whole
  sequence; that keeps the checkpoint's scores identical under plain transformers.
- Position ids follow the attention mask, so left and right padding give the same scores.
- ``save_pretrained`` writes a standard checkpoint (safetensors, tokenizer beside it) that transformers,
  TRL, vLLM and RewardBench load unchanged; rmkit's own settings sit under ``"rmkit"`` in ``config.json``.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, Cache, DynamicCache, PreTrainedModel

from rmkit.attributes import attribute_names, combination
from rmkit.checkpoints import ensure_pad_token, save_model
from rmkit.checkpoints import load as load_checkpoint
from rmkit.data import Example, ExampleTokenizer, examples_from
from rmkit.data.formats import Message
from rmkit.data.steps import SolutionEncoder
from rmkit.defaults import METADATA_KEY
from rmkit.errors import RMKitError
from rmkit.heads import HEADS, MIXED, GatedHead, head_dtype, read_objectives
from rmkit.inference import MAX_ROWS, score_examples, score_sequences
from rmkit.metrics import ranking
from rmkit.packing import Packed, is_right_padded, last_real
from rmkit.runtime import keep_fp32, resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class RewardOutput:
    """``scores``: (B, L) score at every position (``None`` when not asked for); ``end_scores``: (B,) the
    sequence's score; ``end_index``: (B,) the position it was read at."""

    scores: torch.Tensor | None
    end_scores: torch.Tensor
    end_index: torch.Tensor
    attribute_scores: torch.Tensor | None = None  # (B, K): a multi-attribute RM's outputs at the end


@dataclass
class Ranked:
    """Best-of-N for one prompt: ``scores`` (in the order of the responses), ``best`` and ``ranking``."""

    scores: list[float]
    best: int | None
    ranking: list[int]


class HeldModel(nn.Module):
    """What rmkit's model wrappers share: a transformers ``model``, its ``tokenizer`` and rmkit's ``metadata``
    (:class:`RewardModel`, :class:`rmkit.process.ProcessRewardModel`)."""

    model: PreTrainedModel
    metadata: dict[str, Any]
    auto_class: Any = AutoModelForSequenceClassification  # what rebuilds ``model`` from its config

    def with_model(self, model: PreTrainedModel) -> HeldModel:
        """The same wrapper around another ``model`` of the same config (a gathered copy, say)."""
        return type(self)(model, self.tokenizer, self.metadata)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def max_length(self) -> int | None:
        """The longest sequence scored: the metadata's ``max_length``, else what the model can take."""
        if self.metadata.get("max_length"):
            return int(self.metadata["max_length"])
        limits = [
            getattr(self.model.config, "max_position_embeddings", None),
            self.tokenizer.model_max_length,
        ]
        limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
        return min(limits) if limits else None

    @property
    def normalizes(self) -> bool:
        """Whether the metadata holds the score statistics :meth:`normalize` needs."""
        return "score_std" in self.metadata

    def normalize(self, values: Sequence[float]) -> list[float]:
        """Standardise scores with the mean and std of the metadata: measured on the eval data by rmkit's
        training, or the source trainer's (safe-rlhf, OpenRLHF). An error when the metadata has none."""
        if not self.normalizes:
            raise RMKitError(
                "this model stores no score mean and std to normalise with (rmkit training measures them; "
                "safe-rlhf and OpenRLHF checkpoints carry theirs)"
            )
        mean = float(self.metadata.get("score_mean", 0.0))
        std = float(self.metadata.get("score_std", 1.0)) or 1.0
        return [(v - mean) / std for v in values]


class RewardModel(HeldModel):
    """A one-label sequence classifier used as a reward model, with its tokenizer and rmkit metadata."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        metadata: dict[str, Any] | None = None,
        weights: dict[str, float] | None = None,
    ):
        super().__init__()
        ensure_pad_token(tokenizer)
        model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model
        self.tokenizer = tokenizer
        self.metadata: dict[str, Any] = dict(metadata or getattr(model.config, METADATA_KEY, None) or {})
        # A multi-attribute RM (num_labels = K): one output per attribute, one score their weighted sum
        head = getattr(model, "score", None)
        self.attributes = list(getattr(head, "names", None) or attribute_names(model.config))
        given = weights or self.metadata.get("weights")
        self.weights = combination(self.attributes, given)
        self.reweighting = self.weights if given and isinstance(head, MIXED) else None  # else its own mix
        self.is_decoder = isinstance(head, HEADS)
        backbone = model.base_model if self.is_decoder else model
        takes = inspect.signature(backbone.forward).parameters
        self._pass_positions = "position_ids" in takes
        self._takes_cache = self.is_decoder and "use_cache" in takes
        # Set False for a decoder whose attention is not causal (e.g. bidirectional prefix blocks).
        self.unmask_right_padding = self.is_decoder
        # Answers after one prompt reuse its keys and values (rmkit.inference); never where a gate reads it
        self.prefix_sharing = not isinstance(head, GatedHead) or head.bind(tokenizer)
        self.prefix_sharing &= self.reweighting is None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        dimension: int | None = None,
        tokenizer: str | Path | None = None,
        base_model: str | Path | None = None,
        weights: dict[str, float] | None = None,
        single_bos: bool = False,
        **model_kwargs: Any,
    ) -> RewardModel:
        """Load an RM or a backbone.

        ``name_or_path`` (a directory, or a hub name read as its snapshot at ``revision=``, default main:
        :func:`rmkit.locations.snapshot`) is a one-label ``*ForSequenceClassification`` RM (rmkit's or not), a
        backbone (causal LM or encoder), which gets a fresh score head, or another trainer's checkpoint
        (:mod:`rmkit.layouts`), converted in memory; ``dimension`` picks the output of a multi-output head. A
        classifier with K > 1 labels is a multi-attribute RM whose score is the ``weights``' sum of its outputs
        (:mod:`rmkit.attributes`). ``tokenizer`` loads the tokenizer from elsewhere. A LoRA adapter is merged into
        its base model (``base_model``, else its adapter config's). Weights load from safetensors only unless
        ``allow_pickle``; custom model code runs only with ``trust_remote_code``. ``dtype`` ``"auto"``: bf16 on
        a GPU, fp32 on the CPU (:func:`rmkit.runtime.resolve_dtype`). ``single_bos`` reads a layout whose
        authors score with the BOS doubled (Athene-RM) with one BOS.
        """
        target = resolve_device(device) if device is not None else torch.device("cpu")
        model, tok, metadata = load_checkpoint(
            str(name_or_path),
            dtype=resolve_dtype(dtype, target),
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            dimension=dimension,
            tokenizer=tokenizer,
            base_model=base_model,
            kwargs=model_kwargs,
        )
        if single_bos and metadata:
            metadata.pop("double_bos", None)
        rm = cls(model, tok, metadata, weights)
        # A bf16 score head rounds every score to 3 significant digits and flips near-tied pairs
        head = model.score if rm.is_decoder else getattr(model, "classifier", None)
        if isinstance(head, HEADS):
            keep_fp32(head)
        if device is not None:
            rm.to(target)
        return rm.eval()

    def example_tokenizer(
        self, *, max_length: int | None = None, template: str | None = None, truncation: str = "left"
    ) -> ExampleTokenizer:
        """An :class:`ExampleTokenizer` for this model, defaulting to the settings it was trained with (a
        judge's renders its judge prompts: :func:`rmkit.data.judging.example_tokenizer`)."""
        from rmkit.data.judging import example_tokenizer

        template = template or self.metadata.get("template", "auto")
        max_length = max_length or self.max_length
        return example_tokenizer(self.tokenizer, self.metadata, max_length, template, truncation)

    def forward(
        self,
        input_ids: torch.Tensor | Packed,
        attention_mask: torch.Tensor | None = None,
        token_scores: bool = True,
        right_padded: bool | None = None,
    ) -> RewardOutput:
        """Score a padded batch. ``input_ids`` and ``attention_mask`` are (B, L); either padding side works.
        Or a :class:`rmkit.packing.Packed` batch of a causal decoder: N end scores at ``ends``.
        Without ``token_scores`` the head reads the end positions alone (``scores`` is ``None``).

        A decoder attends causally, so with right padding (or none) no real token can see a pad: the mask
        changes nothing that is read and is left out, which lets attention run its fused causal kernel
        (about 2x faster on long rows on CPU; flash attention on a GPU) instead of a masked one.
        ``right_padded``: the caller knows the padding side (``None``: read from the mask, which on a GPU
        waits for it).
        """
        # No cache: it would double a pass's memory (and turn transformers' packed positions off)
        kwargs: dict[str, Any] = {"use_cache": False} if self._takes_cache else {}
        if isinstance(input_ids, Packed):
            ids, positions, end_index = input_ids.tensors()
            mask = input_ids.attention(self.model.config._attn_implementation, self.model.dtype)
            hidden = self.model.base_model(ids, position_ids=positions, attention_mask=mask, **kwargs)
            at_end, scores = hidden.last_hidden_state.flatten(0, 1)[end_index], None
        else:
            right = is_right_padded(attention_mask) if right_padded is None else right_padded
            if not (self.is_decoder and self.unmask_right_padding and right):
                kwargs["attention_mask"] = attention_mask
                if self._pass_positions:
                    kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            if not self.is_decoder:
                out = self.model(input_ids, output_hidden_states=token_scores, **kwargs)
                token = self._encoder_token_scores(out.hidden_states[-1]) if token_scores else None
                end_scores = self._combined(out.logits)
                attributes = self._rated(out.logits) if self.attributes else None
                return RewardOutput(
                    token, end_scores, torch.zeros_like(end_scores, dtype=torch.long), attributes
                )
            hidden = self.model.base_model(input_ids, **kwargs).last_hidden_state
            end_index = last_real(attention_mask)
            at_end = hidden[torch.arange(len(end_index), device=hidden.device), end_index]
            if isinstance(self.model.score, MIXED):  # ArmoRM's gate is read where the prompt ends
                out = read_objectives(self.model.score, hidden, at_end, input_ids, self.reweighting)
                return RewardOutput(None, out[0], end_index, out[1])
            scores = self._head(hidden) if token_scores else None
        # each attribute's output at the end (a multi-attribute RM)
        head = self.model.score
        attributes = self._rated(head(at_end.to(head_dtype(head)))) if self.attributes else None
        return RewardOutput(scores, self._head(at_end), end_index, attributes)

    @property
    def shares_prefixes(self) -> bool:
        """Whether responses to one prompt may run after one pass over the prompt (:meth:`prefix_cache`,
        :meth:`score_after`): a causal decoder whose backbone takes a cache, with ``prefix_sharing`` on."""
        if not (self.prefix_sharing and self.is_decoder and self.unmask_right_padding):
            return False
        return "past_key_values" in inspect.signature(self.model.base_model.forward).parameters

    def prefix_cache(self, input_ids: torch.Tensor) -> Cache:
        """Keys and values of right-padded prefixes ``input_ids`` (P, L), for :meth:`score_after`.

        No mask is needed: attention is causal, so no real token sees the pads after it, and the pads'
        own keys are masked out when the continuations attend over the cache."""
        return self.model.base_model(input_ids, use_cache=True).past_key_values

    def score_after(
        self,
        cache: Cache,
        rows: torch.Tensor,
        prefix_mask: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """End scores (R,) of continuations ``input_ids`` (R, S, right-padded) of the prefixes ``rows`` (R
        indices into the cache's batch, repeats allowed) whose mask is ``prefix_mask`` (P, L).

        Equal to scoring each prefix + continuation as one sequence: the continuation's positions go on
        from its prefix's length and it attends to its prefix's real tokens and to itself, causally."""
        past = DynamicCache(
            [(layer.keys[rows], layer.values[rows]) for layer in cache.layers], config=self.model.config
        )
        own = prefix_mask[rows]
        width = input_ids.shape[1]
        positions = own.sum(-1, keepdim=True) + torch.arange(width, device=input_ids.device)
        hidden = self.model.base_model(
            input_ids,
            attention_mask=torch.cat([own, attention_mask], dim=1),
            position_ids=positions,
            past_key_values=past,
        ).last_hidden_state
        scores = self._head(hidden)
        return scores.gather(1, last_real(attention_mask)[:, None]).squeeze(1)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """A decoder's score at every position of ``hidden`` (B, L, H): the head, plus the ``score_bias`` of
        the metadata (the bias of a head converted from another trainer's layout, :mod:`rmkit.layouts`)."""
        scores = self._combined(self.model.score(hidden.to(head_dtype(self.model.score))))
        bias = self.metadata.get("score_bias")
        return scores + bias if bias else scores

    def _combined(self, outputs: torch.Tensor) -> torch.Tensor:
        """The score of a head's raw outputs (..., K): the one output, or the attributes' weighted sum."""
        outputs = self._rated(outputs)
        return outputs.squeeze(-1) if outputs.shape[-1] == 1 else outputs @ self.weights.to(outputs)

    def _rated(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs of a head trained on standardised ratings back on the ratings' scale (the metadata's
        ``rating_mean``/``rating_std``, one a output); others as they are."""
        if "rating_std" not in self.metadata:
            return outputs
        std, mean = (
            torch.tensor(self.metadata[k], dtype=outputs.dtype, device=outputs.device)
            for k in ("rating_std", "rating_mean")
        )
        return outputs * std + mean

    def compile(self, **options: Any) -> RewardModel:
        """Compile the backbone in place with ``torch.compile`` (``dynamic=True`` unless ``options`` say
        otherwise) and return ``self``. The first batch pays for compilation (10-30 s on 2 CPU cores);
        later batches of any shape reuse it, fusing the element-wise work between the matrix products: it
        pays off on long runs of models of hidden size 512 and up. Weights and saving are unchanged."""
        options.setdefault("dynamic", True)
        self.model.base_model.compile(**options)
        return self

    def _encoder_token_scores(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Apply an encoder's classification head at every position, as if each were the first token."""
        b, length, h = hidden.shape
        pooler = getattr(self.model.base_model, "pooler", None)
        classifier = getattr(self.model, "classifier", None)
        if pooler is not None and hasattr(pooler, "dense") and isinstance(classifier, nn.Linear):
            return self._combined(classifier(pooler.activation(pooler.dense(hidden))))
        if isinstance(classifier, nn.Module) and not isinstance(classifier, nn.Linear):
            return self._combined(classifier(hidden.reshape(b * length, 1, h)).view(b, length, -1))
        return None

    def score_ids(
        self,
        sequences: Sequence[Sequence[int]],
        *,
        batch_tokens: int | None = None,
        max_rows: int | None = MAX_ROWS,
    ) -> list[float]:
        """Scores of token id sequences, in the order given (:func:`rmkit.inference.score_sequences`)."""
        return score_sequences(self, sequences, batch_tokens=batch_tokens, max_rows=max_rows)

    def score(
        self,
        prompts: Sequence[str | list[Message]] | None = None,
        responses: Sequence[str] | None = None,
        *,
        messages: Sequence[list[Message]] | None = None,
        texts: Sequence[str] | None = None,
        batch_tokens: int | None = None,
        normalize: bool = False,
    ) -> list[float]:
        """Score responses to prompts, whole conversations (scored at their last assistant turn), or
        already rendered texts (tokenised as ``tokenizer(text)`` does). Returns one float per input, in order.

        With ``normalize`` the scores are standardised with the mean and std stored in the metadata at
        training time.
        """
        examples = examples_from(prompts, responses, messages=messages, texts=texts)
        # Responses to the same prompt (a GRPO group, best-of-N) go in as one example, to share its pass.
        groups: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            groups.setdefault(json.dumps(ex.prompt) if ex.prompt else f"#{i}", []).append(i)
        merged = [
            Example(
                k,
                examples[rows[0]].prompt,
                [examples[r].responses[0] for r in rows],
                False,
                examples[rows[0]].rendered,
            )
            for k, rows in enumerate(groups.values())
        ]
        values = [0.0] * len(examples)
        scored = score_examples(
            self, merged, self.example_tokenizer(), batch_tokens=batch_tokens, chunk_rows=max(len(merged), 1)
        )
        for (_, scores), rows in zip(scored, groups.values(), strict=True):
            for r, value in zip(rows, scores, strict=True):
                values[r] = value
        return self.normalize(values) if normalize else values

    def step_scores(
        self,
        prompt: str | list[Message],
        steps: Sequence[str],
        *,
        separator: str = "\n",
        step_tag: str | None = None,
    ) -> list[float]:
        """An outcome RM read as a process RM: step *k*'s score is this RM's score at the end of step *k*
        (the solution rendered as :class:`rmkit.data.steps.SolutionEncoder` says), every step in one pass.
        On a causal decoder that equals scoring the solution cut after step *k*; an encoder reads the whole
        text from its first token, so it is refused. A trained PRM: :class:`rmkit.process.ProcessRewardModel`."""
        if not (self.is_decoder and self.unmask_right_padding):
            raise RMKitError(
                "step scores of an outcome RM need a causal decoder: an encoder's score sees every step"
            )
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        ids, positions = SolutionEncoder(self.tokenizer, separator, step_tag).encode(
            messages, steps, self.max_length
        )
        return score_sequences(self, [ids], positions=[positions])[0]

    def rank(
        self,
        prompt: str | list[Message],
        responses: Sequence[str],
        *,
        top_k: int | None = None,
        min_score: float | None = None,
    ) -> Ranked:
        """Score the candidate ``responses`` to one ``prompt`` (sharing the prompt's pass on a causal model)
        and rank them: ``scores`` in the order given, ``ranking`` best first (ties in input order; cut by
        ``top_k`` and ``min_score``), ``best`` its first (``None`` when ``min_score`` leaves none)."""
        scores = self.score(prompts=[prompt] * len(responses), responses=list(responses))
        order = ranking(scores, top_k=top_k, min_score=min_score)
        return Ranked(scores, order[0] if order else None, order)

    def save_pretrained(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """Write a standard ``AutoModelForSequenceClassification`` checkpoint plus tokenizer to ``path``.

        ``metadata`` (template, max_length, score_mean, score_std, ...) is merged into the model's
        metadata and stored under ``"rmkit"`` in ``config.json``.

        The files are written into a temporary directory inside ``path`` and renamed into place when all
        are written, ``config.json`` last, so a run killed while saving leaves no half-written weights under
        their final name.
        """
        self.metadata.update(metadata or {})
        save_model(self.model, self.tokenizer, self.metadata, Path(path))
