"""Readout judges: a causal LM read as a reward model at its verdict token (:mod:`rmkit.data.judging`).

The judge is an :class:`rmkit.RewardModel` whose score head is :class:`ReadoutHead`, made of the rows of the
LM's output layer for the verdict tokens: it computes those K logits alone (never the whole vocabulary) and
reads them as the judge's readout says. Everything a RewardModel does then holds for the judge: exact end
positions under left or right padding, length-sorted batches, the candidates of one prompt after one pass
over the judge prompt and question (prefix sharing), fp32 readout whatever the weights.

A verifier's log-odds ``l(yes) - l(no)`` is linear in the last hidden state: the head is then one row,
``W[yes] - W[no]``, and :func:`verifier_classifier` writes it as a plain one-label sequence classifier
(``rmkit convert --verifier``) that any classifier consumer serves unchanged.

A generating judge (``readout="generate"``, :class:`GeneratingJudge`) writes its reasoning and then a verdict
that a parser reads (``[[A]]``, a trailing rating, ``\\boxed{True}``, ``Final Judgement: Yes``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rmkit.checkpoints import ensure_pad_token, require_lm_head, save_model
from rmkit.data.judging import JUDGE_KEY, Judge
from rmkit.defaults import METADATA_KEY, resolve_name
from rmkit.errors import RMKitError
from rmkit.modeling import HeldModel, RewardModel
from rmkit.runtime import keep_fp32, resolve_device, resolve_dtype


def _causal_lm(
    path: str | Path, dtype: Any, device: Any, trust_remote_code: bool, allow_pickle: bool
) -> tuple[Any, Any, torch.device]:
    """``(causal LM, tokenizer, target device)`` of the judge at ``path`` (safetensors unless ``allow_pickle``)."""
    name = resolve_name(path)
    target = resolve_device(device) if device is not None else torch.device("cpu")
    try:
        lm, info = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=resolve_dtype(dtype, target),
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RMKitError(f"cannot load '{name}' as a causal LM judge: {e}") from None
    require_lm_head(lm, info, name, "a judge reads its verdict tokens' logits")
    return lm, tokenizer, target


def fitted(judge: Judge, tokenizer: Any) -> Judge:
    """``judge`` with its prefix and verdict tokens as ``tokenizer`` writes them: where it joins the prefix's
    trailing space to a verdict (Llama 3 writes ``": A"`` as ``":"``, ``" A"``), the prompt ends before the
    space and the verdict tokens carry it, so the verdict is read where the model would write it."""
    if not judge.prefix.endswith(" ") or judge.readout == "generate":
        return judge
    before = tokenizer(judge.prefix, add_special_tokens=False)["input_ids"]
    joined = [
        tokenizer(judge.prefix + t, add_special_tokens=False)["input_ids"][: len(before)] != before
        for t in judge.tokens
    ]
    if not any(joined):
        return judge
    return replace(judge, prefix=judge.prefix[:-1], tokens=[" " + t for t in judge.tokens])


def verdict_ids(tokenizer: Any, judge: Judge) -> list[int]:
    """The token id of each verdict token; each must be one token of the tokenizer (a token readout names
    its vocabulary entry by id)."""
    if judge.ids:
        return list(judge.ids)
    ids = []
    for text in judge.tokens:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise RMKitError(
                f"the judge's verdict {text!r} is {len(encoded)} tokens for this tokenizer ({encoded}); each "
                "verdict must be one token: give others with --judge-tokens"
            )
        ids.append(encoded[0])
    return ids


class ReadoutHead(nn.Linear):
    """The judge's score from a hidden state: the verdict tokens' logits (the LM head's rows, its bias and
    final soft-capping included), then the readout: their difference (verifier, pairwise) or the rating's
    expectation under their softmax."""

    def __init__(self, rows: torch.Tensor, bias: torch.Tensor | None, judge: Judge, softcap: float | None):
        super().__init__(rows.shape[1], rows.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.weight.copy_(rows)
            if bias is not None:
                self.bias.copy_(bias)
        self.readout, self.softcap = judge.readout, softcap
        self.register_buffer("values", torch.tensor(judge.values or [0.0] * rows.shape[0]), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().forward(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        if self.readout == "rating":
            return (logits.softmax(-1) @ self.values.float())[..., None]
        if self.readout == "token":
            return logits[..., :1]
        return logits[..., :1] - logits[..., 1:2]


def load_judge(
    path: str | Path,
    judge: Judge | str = "verifier",
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **settings: Any,
) -> RewardModel:
    """A causal LM at ``path`` as a readout judge (module docstring): ``judge`` is a :class:`Judge` or a
    readout's name with ``settings`` (``template``, ``tokens``, ``values``, ``schedule``)."""
    judge = judge if isinstance(judge, Judge) else Judge.of({"readout": judge, **settings})
    if judge.readout == "generate":
        return load_generating_judge(  # type: ignore[return-value]
            path,
            judge,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
    lm, tokenizer, target = _causal_lm(path, dtype, device, trust_remote_code, allow_pickle)
    judge = fitted(judge, tokenizer)
    ids = verdict_ids(tokenizer, judge)
    out = lm.get_output_embeddings()
    bias = out.bias[ids] if getattr(out, "bias", None) is not None else None
    lm.score = ReadoutHead(
        out.weight[ids].detach(), bias, judge, getattr(lm.config, "final_logit_softcapping", None)
    )
    lm.config.num_labels = 1  # one score a sequence (not a K-attribute RM)
    metadata = {
        **(getattr(lm.config, METADATA_KEY, None) or {}),
        JUDGE_KEY: judge.stored(),
        "kind": judge.kind,
    }
    rm = RewardModel(lm, tokenizer, metadata)
    keep_fp32(lm.score)
    if device is not None:
        rm.to(target)
    return rm.eval()


def verifier_classifier(source: str | Path, destination: str | Path, judge: Judge, **loading: Any) -> Path:
    """Write the verifier judge of ``source`` as a one-label sequence classifier whose ``score.weight`` is
    ``W[yes] - W[no]``: its logit is exactly the verifier's log-odds (``rmkit convert --verifier``)."""
    if judge.readout not in ("verifier", "token"):
        raise RMKitError(
            "only a verifier (yes/no) or a token judge is one linear score; rating and pairwise judges are not"
        )
    rm = load_judge(source, judge, dtype="fp32", **loading)
    head = rm.model.score
    if head.softcap:
        raise RMKitError(f"{source}: its logits are soft-capped, so the log-odds are not linear in its state")
    classifier = AutoModelForSequenceClassification.from_pretrained(
        resolve_name(source),
        num_labels=1,
        dtype=torch.float32,
        use_safetensors=not loading.get("allow_pickle"),
    )
    if not isinstance(getattr(classifier, "score", None), nn.Linear):
        raise RMKitError(
            f"{source}: its sequence classifier has no linear score head to write the verifier into"
        )

    def linear(t: torch.Tensor) -> torch.Tensor:  # the readout's one row: W[yes] - W[no], or W[entry]
        return t[:1] - t[1:2] if judge.readout == "verifier" else t[:1]

    with torch.no_grad():
        classifier.score.weight.copy_(linear(head.weight))
        bias = linear(head.bias) if head.bias is not None else None
        if classifier.score.bias is not None:
            classifier.score.bias.copy_(bias if bias is not None else 0)
        elif bias is not None and float(bias[0]):
            raise RMKitError(f"{source}: its output layer has a bias that a bias-free score head cannot hold")
    metadata = {JUDGE_KEY: judge.stored(), "kind": judge.kind, "add_eos": False}
    save_model(classifier, rm.tokenizer, metadata, Path(destination))
    return Path(destination)


class GeneratingJudge(HeldModel):
    """A causal LM that writes a judgment and then its verdict, read by the judge's parser
    (:mod:`rmkit.data.judging`): greedy by default, ``votes`` seeded samples averaged otherwise."""

    auto_class = AutoModelForCausalLM
    generates = True

    def __init__(self, model: Any, tokenizer: Any, metadata: dict[str, Any]):
        super().__init__()
        ensure_pad_token(tokenizer)
        self.model, self.tokenizer, self.metadata = model, tokenizer, metadata
        self.judge = Judge.of(metadata[JUDGE_KEY])

    def example_tokenizer(
        self, *, max_length: int | None = None, template: str | None = None, truncation: str = "left"
    ) -> Any:
        """The judge prompts' tokenizer; a prompt leaves ``max_new_tokens`` of the model's length free."""
        from rmkit.data.judging import JudgeTokenizer

        limit = max_length or (self.max_length and max(self.max_length - self.judge.max_new_tokens, 1))
        return JudgeTokenizer(
            self.tokenizer, self.judge, max_length=limit, template=template or "auto", truncation=truncation
        )

    engine: Any = None  # what writes the judgments in place of transformers' generate (VLLMEngine)

    @torch.inference_mode()
    def judgments(self, sequences: list[list[int]], batch_tokens: int | None = None) -> list[list[str]]:
        """``votes`` judgments of each token sequence, in order: left-padded batches of similar length."""
        from rmkit.data.batching import token_budget_batches

        if self.engine is not None:
            return self.engine(sequences)
        from rmkit.inference import MAX_ROWS

        judge, pad = self.judge, self.pad_token_id
        budget = batch_tokens or 8192
        out: list[list[str]] = [[] for _ in sequences]
        lengths = [len(s) + judge.max_new_tokens for s in sequences]
        for batch in token_budget_batches(lengths, budget, max(1, (MAX_ROWS or 64) // judge.votes)):
            width = max(len(sequences[i]) for i in batch)
            ids = torch.tensor([[pad] * (width - len(sequences[i])) + list(sequences[i]) for i in batch])
            mask = torch.tensor([[0] * (width - len(sequences[i])) + [1] * len(sequences[i]) for i in batch])
            sample = judge.votes > 1
            if sample:
                torch.manual_seed(judge.seed)
            generated = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=judge.max_new_tokens,
                do_sample=sample,
                num_return_sequences=judge.votes,
                pad_token_id=pad,
                **({} if sample else {"temperature": None, "top_p": None, "top_k": None}),
            )
            texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for k, i in enumerate(batch):
                out[i] = texts[k * judge.votes : (k + 1) * judge.votes]
        return out

    def verdicts(
        self, sequences: list[list[int]], batch_tokens: int | None = None, stats: Any = None
    ) -> list[float]:
        """One score a sequence, each alone (the server's and :func:`rmkit.inference.score_sequences`' path):
        the verdict of its judgments by the rating parser where the template chooses among answers, else
        the template's own; failures counted in ``stats.parse_failures`` and valued by the failure policy."""
        parser = "rating" if self.judge.choice else self.judge.parser
        out = []
        for texts in self.judgments(sequences, batch_tokens):
            value, failed = self.judge.verdict(texts, parser)
            if stats is not None:
                stats.parse_failures += failed
            out.append(value)
        return out


def load_generating_judge(
    path: str | Path, judge: Judge, *, dtype: Any = "auto", device: Any = None, **loading: Any
) -> GeneratingJudge:
    """A causal LM at ``path`` as a generating judge (with ``judge.engine == "vllm"``, vLLM holds the weights:
    transformers builds only the model's skeleton, on the meta device)."""
    remote, pickle = loading.get("trust_remote_code", False), loading.get("allow_pickle", False)
    if judge.engine == "vllm":
        engine = VLLMEngine(path, judge, dtype, remote)
        config = AutoConfig.from_pretrained(resolve_name(path), trust_remote_code=remote)
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(resolve_name(path), trust_remote_code=remote)
    else:
        engine, (lm, tokenizer, target) = None, _causal_lm(path, dtype, device, remote, pickle)
    tokenizer.padding_side = "left"
    model = GeneratingJudge(lm, tokenizer, {JUDGE_KEY: judge.stored(), "kind": judge.kind})
    model.engine = engine
    if device is not None and engine is None:
        model.to(target)
    return model.eval()


class VLLMEngine:
    """vLLM writing a generating judge's judgments (a GPU with ``pip install vllm``; never required): the
    same prompt token ids, greedy or ``votes`` samples seeded by ``seed``, at most ``max_new_tokens``."""

    def __init__(self, path: str | Path, judge: Judge, dtype: Any, trust_remote_code: bool):
        try:
            from vllm import LLM
        except ImportError:
            raise RMKitError(
                "--judge-engine vllm needs vLLM (pip install vllm, on a GPU machine); "
                "--judge-engine transformers (the default) needs nothing more"
            ) from None
        self.judge = judge
        self.llm = LLM(
            model=str(resolve_name(path)),
            dtype=dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch."),
            seed=judge.seed,
            trust_remote_code=trust_remote_code,
        )

    def __call__(self, sequences: list[list[int]]) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        judge = self.judge
        params = SamplingParams(
            n=judge.votes,
            temperature=1.0 if judge.votes > 1 else 0.0,
            seed=judge.seed,
            max_tokens=judge.max_new_tokens,
            skip_special_tokens=True,
        )
        prompts = [TokensPrompt(prompt_token_ids=list(s)) for s in sequences]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[choice.text for choice in out.outputs] for out in outputs]
