"""ProcessRewardModel: a score for every step of a solution, all read in one forward pass.

A solution is rendered as its prompt (the chat template's generation prompt, or the plain template's
``"User: ...\\n\\nAssistant: "``), then each step's tokens followed by the separator's tokens (each step
tokenised on its own, as TRL's PRM trainer does, so step boundaries never merge). Step *k*'s score is read
at the separator's last token after it, or at the step tag's token within the separator when there is
one. A causal model sees only the tokens before that position, so one pass over the whole solution gives
every step the score it gets when its prefix is scored alone (tested to 1e-5).

Three heads, one interface (``head`` in :class:`StepFormat`):

- ``classifier`` with one label: ``AutoModelForTokenClassification``, score = sigmoid of the logit
  (what ``rmkit train`` trains on step-labelled data, with binary cross-entropy);
- ``classifier`` with two labels, as Qwen2.5-Math-PRM: score = the softmax probability of ``good_label``;
- ``lm``, as Math-Shepherd: a causal LM, score = softmax over the logits of ``good_token`` and
  ``bad_token`` at the step tag, the probability of the good one.

Step settings live under ``"rmkit": {"prm": {...}}`` in ``config.json``, so the checkpoint is a plain
transformers model and rmkit knows how to read it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from rmkit.checkpoints import ensure_pad_token, require_lm_head, save_model
from rmkit.data.formats import Message
from rmkit.data.rendering import RowCounts
from rmkit.data.steps import (  # aggregate, AGGREGATES and split_steps: also rmkit.process's, as before
    AGGREGATES,  # noqa: F401
    Solution,
    SolutionEncoder,
    aggregate,  # noqa: F401
    split_steps,  # noqa: F401
)
from rmkit.defaults import PRM_KEY, resolve_name
from rmkit.errors import RMKitError
from rmkit.heads import HEADS
from rmkit.inference import score_sequences
from rmkit.locations import snapshot
from rmkit.modeling import (
    METADATA_KEY,
    HeldModel,
    RewardOutput,
)
from rmkit.packing import Packed, is_right_padded, last_real
from rmkit.runtime import keep_fp32, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

HEADS_OF = ("classifier", "lm")
PRM_CLASSES = (
    "ForTokenClassification",
    "ForProcessRewardModel",
)  # Qwen2.5-Math-PRM: Qwen2ForProcessRewardModel


SEPARATOR = "\n"  # the default step separator
STEP_TOKEN = "<step>"  # the step marker added to a tokenizer that has no token for the separator


@dataclass
class StepFormat:
    """How steps are marked and read (stored under ``"rmkit": {"prm": ...}`` in ``config.json``).

    ``separator`` cuts a solution's text into steps; ``marker`` (the separator itself unless set) is the text
    written after every step, whose token the score is read at. When the default separator (a newline)
    tokenises to nothing, as with WordPiece tokenizers, the marker is the tokenizer's ``sep_token`` (else a
    ``<step>`` token added to it): see :func:`resolve_marker`."""

    separator: str | None = None  # None: the default, a newline (resolved with the tokenizer)
    marker: str | None = None
    step_tag: str | None = None  # the separator's token the score is read at; None: its last token
    head: str = "classifier"
    good_token: str | None = None  # head "lm": the tokens whose logits are compared at the tag
    bad_token: str | None = None
    good_label: int = 1  # head "classifier" with two labels: the class that means "right"

    @classmethod
    def of(cls, stored: dict[str, Any] | None, **given: Any) -> StepFormat:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (stored or {}).items() if k in known}
        values.update({k: v for k, v in given.items() if v is not None})
        if values.get("good_token") or values.get("bad_token"):
            values["head"] = "lm"
        fmt = cls(**values)
        if fmt.head not in HEADS_OF:
            raise RMKitError(f"unknown PRM head '{fmt.head}': expected one of {', '.join(HEADS_OF)}")
        if fmt.head == "lm" and not (fmt.good_token and fmt.bad_token):
            raise RMKitError(
                "a causal-LM PRM needs both --good-token and --bad-token (Math-Shepherd: '+' and '-')"
            )
        if fmt.separator == "" or fmt.marker == "":
            raise RMKitError("the step separator must not be empty")
        return fmt


def resolve_marker(steps: StepFormat, tokenizer: Any, model: Any) -> None:
    """Give ``steps`` the default separator, and a marker that survives tokenisation where the newline does
    not: the tokenizer's ``sep_token``, else a ``<step>`` special token added to the tokenizer (the model's
    embeddings grown to match). Said in one log line; the checkpoint stores the choice."""
    steps.separator = SEPARATOR
    if steps.marker is not None or tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]:
        return
    sep = tokenizer.sep_token
    if sep and tokenizer(sep, add_special_tokens=False)["input_ids"]:
        steps.marker = sep
    else:
        tokenizer.add_special_tokens({"additional_special_tokens": [STEP_TOKEN]})
        model.resize_token_embeddings(len(tokenizer))
        steps.marker = STEP_TOKEN
    log.info(
        "PRM steps: a newline tokenises to nothing with this tokenizer, so each step (cut at newlines) ends "
        "with %r instead; the checkpoint stores it (--separator names another)",
        steps.marker,
    )


class ProcessRewardModel(HeldModel):
    """A step-level reward model with its tokenizer and :class:`StepFormat`."""

    def __init__(self, model, tokenizer, steps: StepFormat, metadata: dict[str, Any] | None = None):
        super().__init__()
        ensure_pad_token(tokenizer)
        self.model, self.tokenizer, self.steps = model, tokenizer, steps
        self.metadata: dict[str, Any] = dict(metadata or getattr(model.config, METADATA_KEY, None) or {})
        # as for RewardModel: a linear ``score`` head on every position marks a decoder (causal attention)
        self.is_decoder = steps.head == "lm" or isinstance(getattr(model, "score", None), HEADS)
        if steps.separator is None:
            resolve_marker(steps, tokenizer, model)
        self.encoder = SolutionEncoder(tokenizer, steps.marker or steps.separator, steps.step_tag)
        if steps.head == "lm":
            self._pair = [self._token(steps.good_token), self._token(steps.bad_token)]
        else:
            self.labels = model.config.num_labels
            if self.labels not in (1, 2):
                raise RMKitError(f"a PRM classifier has one or two labels; this one has {self.labels}")

    @property
    def auto_class(self) -> Any:
        return AutoModelForCausalLM if self.steps.head == "lm" else AutoModelForTokenClassification

    def with_model(self, model: Any) -> ProcessRewardModel:
        return ProcessRewardModel(model, self.tokenizer, self.steps, self.metadata)

    def _token(self, text: str | None) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RMKitError(
                f"the PRM token {text!r} is {len(ids)} tokens for this tokenizer; it must be one"
            )
        return ids[0]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        **step_format: Any,
    ) -> ProcessRewardModel:
        """Load a PRM: a token classifier (rmkit's, or two-class as Qwen2.5-Math-PRM), a causal LM read by
        its good/bad tokens (``good_token``, ``bad_token``, ``step_tag``, ``separator``: Math-Shepherd), or a
        backbone, which gets a fresh one-label token head (to train). A hub name is read as its snapshot
        directory at ``revision`` (:func:`rmkit.locations.snapshot`)."""
        name = snapshot(
            resolve_name(path),
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            revision=revision,
        )
        try:
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise RMKitError(f"cannot load a model config from '{name}': {e}") from None
        stored = (getattr(config, METADATA_KEY, None) or {}).get(PRM_KEY)
        steps = StepFormat.of(stored, **step_format)
        target = resolve_device(device) if device is not None else torch.device("cpu")
        options = {
            "dtype": resolve_dtype(dtype, target),
            "use_safetensors": None if allow_pickle else True,
            "trust_remote_code": trust_remote_code,
        }
        classifier = any(a.endswith(PRM_CLASSES) for a in (config.architectures or []))
        try:
            if steps.head == "lm":
                model, info = AutoModelForCausalLM.from_pretrained(name, output_loading_info=True, **options)
                require_lm_head(model, info, name, "a good/bad-token PRM reads its tokens' logits")
            elif classifier:
                model, info = AutoModelForTokenClassification.from_pretrained(
                    name, output_loading_info=True, **options
                )
                _two_layer_head(model, name, info["unexpected_keys"], allow_pickle)
            else:
                model = AutoModelForTokenClassification.from_pretrained(name, num_labels=1, **options)
        except OSError as e:
            raise RMKitError(f"cannot load weights from '{name}': {e}") from None
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        prm = cls(model, tokenizer, steps)
        head = getattr(model, "score", None) or getattr(model, "classifier", None)
        if isinstance(head, HEADS):  # bf16 logits would round every step's probability
            keep_fp32(head)
        if device is not None:
            prm.to(target)
        return prm.eval()

    def encode(
        self, prompt: Sequence[Message], steps: Sequence[str], max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        """``(ids, positions)`` of a solution (:class:`rmkit.data.steps.SolutionEncoder`), cut to
        ``max_length`` (default: the model's)."""
        return self.encoder.encode(prompt, steps, max_length or self.max_length)

    def forward(
        self,
        input_ids: torch.Tensor | Packed,
        attention_mask: torch.Tensor | None = None,
        token_scores: bool = True,
        raw: bool = False,
        right_padded: bool | None = None,
    ) -> RewardOutput:
        """``scores`` (B, L): the step score (a probability) at every position; ``end_scores`` at the last.
        With ``raw``, a one-label head's logits instead (what training's binary cross-entropy takes).
        ``right_padded`` as for :meth:`rmkit.RewardModel.forward`; a :class:`rmkit.packing.Packed` batch
        gives ``scores`` (1, T) over its packed row and ``end_scores`` at its ``ends``."""
        logits = self.logits(input_ids, attention_mask, right_padded)
        if self.steps.head == "lm":
            scores = logits.float().softmax(-1)[..., 0]
        elif self.labels == 2:
            scores = logits.float().softmax(-1)[..., self.steps.good_label]
        else:
            scores = logits.squeeze(-1) if raw else torch.sigmoid(logits.float().squeeze(-1))
        if isinstance(input_ids, Packed):
            return RewardOutput(scores, scores[0, input_ids.ends], input_ids.ends)
        end_index = last_real(attention_mask)
        return RewardOutput(scores, scores.gather(1, end_index[:, None]).squeeze(1), end_index)

    def logits(
        self,
        input_ids: torch.Tensor | Packed,
        attention_mask: torch.Tensor | None = None,
        right_padded: bool | None = None,
    ) -> torch.Tensor:
        """The head's raw outputs at every position: (B, L, labels), or (B, L, 2) good/bad logits for ``lm``."""
        kwargs: dict[str, Any] = {"use_cache": False} if self.is_decoder else {}
        if isinstance(input_ids, Packed):  # positions restart per sequence, no mask (rmkit.packing)
            input_ids, kwargs["position_ids"] = input_ids.input_ids, input_ids.position_ids
        else:
            right = is_right_padded(attention_mask) if right_padded is None else right_padded
            if not (self.is_decoder and right):
                kwargs["attention_mask"] = attention_mask
        if self.steps.head == "lm":
            hidden = self.model.base_model(input_ids, **kwargs).last_hidden_state
            rows = self.model.get_output_embeddings().weight[self._pair]
            return hidden.float() @ rows.T.float()  # two logits a position, in fp32 whatever the weights
        return self.model(input_ids, **kwargs).logits

    def step_scores(self, prompt: str | Sequence[Message], steps: Sequence[str]) -> list[float]:
        """The score of each step of one solution (fewer when the solution is cut to the length limit)."""
        return self.score_solutions([prompt], [steps])[0]

    def score_solutions(
        self,
        prompts: Sequence[str | Sequence[Message]],
        solutions: Sequence[Sequence[str]],
        *,
        batch_tokens: int | None = None,
    ) -> list[list[float]]:
        """Step scores of many solutions, in order, in token-budget batches (:mod:`rmkit.inference`)."""
        encoded = [
            Solution(*self.encode([{"role": "user", "content": p}] if isinstance(p, str) else p, s), len(s))
            for p, s in zip(prompts, solutions, strict=True)
        ]
        return score_solutions(self, encoded, batch_tokens=batch_tokens)

    def save_pretrained(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        """A plain transformers checkpoint (safetensors, tokenizer beside it) with the step settings stored."""
        self.metadata.update(metadata or {})
        self.metadata[PRM_KEY] = asdict(self.steps)
        save_model(self.model, self.tokenizer, self.metadata, Path(path))


def score_solutions(
    prm: ProcessRewardModel,
    solutions: Sequence[Solution],
    *,
    batch_tokens: int | None = None,
    stats: RowCounts | None = None,
) -> list[list[float]]:
    """Step scores of encoded ``solutions`` in order, batched by the inference core; ``stats`` counts the
    solutions, their tokens and those cut to the length limit (whose later steps get no score)."""
    if stats is not None:
        for s in solutions:
            stats.rows += 1
            stats.tokens += len(s.ids)
            stats.truncated += len(s.positions) < s.steps
    return score_sequences(
        prm, [s.ids for s in solutions], batch_tokens=batch_tokens, positions=[s.positions for s in solutions]
    )


def _two_layer_head(model: Any, name: str, unused: list[str], allow_pickle: bool) -> None:
    """Give a token classifier whose checkpoint holds a ``Linear → ReLU → Linear`` head (``score.0``,
    ``score.2``: Qwen2.5-Math-PRM's) that head, read from its weights, in place of the fresh linear one."""
    if "score.0.weight" not in unused:
        return
    from rmkit.heads import MLPHead
    from rmkit.layouts import _weight_files, read_weights

    path = Path(name)
    tensors = {
        k: v for k, v in read_weights(_weight_files(path), allow_pickle).items() if k.startswith("score.")
    }
    labels = tensors["score.2.weight"].shape[0]
    head = MLPHead(tensors["score.0.weight"].shape[1], labels)
    head.load_state_dict({k.removeprefix("score."): v for k, v in tensors.items()})
    model.score = head.to(next(model.parameters()).dtype)
    model.config.num_labels = labels
