"""The score heads rmkit reads at every position of a decoder: one linear layer (every trainer's), or a
two-layer MLP (:class:`MLPHead`, INF-ORM's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class MLPHead(nn.Sequential):
    """A score head of linear layers with ReLU between them, ``Linear → ReLU → ... → Linear``, read at the
    same position as a linear one: INF-ORM's and Qwen2.5-Math-RM's (``sizes`` hidden, hidden, 1), GRM's
    value head (hidden, 1024, 1). Not linear, so not writable as a plain one-label classifier."""

    def __init__(self, hidden: int, labels: int = 1, sizes: list[int] | None = None):
        sizes = sizes or [hidden, hidden, labels]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        super().__init__(*layers[:-1])


def head_dtype(head: nn.Module) -> torch.dtype:
    return next(head.parameters()).dtype


class AttributeHead(nn.Linear):
    """K attribute outputs of one linear layer with a bias, read at the last token: the Decision-Tree RM's
    ``score`` (its five HelpSteer2 attributes). The standard classifier's head has no bias, so it is not
    written as one."""


# ArmoRM's gate: the last place the assistant's turn opens, right after the prompt (Llama 3's tokens).
GATE_TEXT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


class GatedHead(nn.Module):
    """ArmoRM's head (``LlamaForRewardModelWithGating``): K objective rewards read at the last token
    (``regression``, bias-free), mixed by a transform matrix, and weighted by a gating network read at the
    prompt's end (the last place :data:`GATE_TEXT` starts): ReLU layers, then ``softmax(x / temperature)``
    times ``logit_scale``. The score is ``sum(gate * (rewards @ transform))``. QRM's is the same with Q
    quantiles an objective (``quantiles``), each objective's reward their mean."""

    def __init__(
        self,
        hidden: int,
        objectives: int,
        gating_hidden: int,
        layers: int,
        temperature: float,
        quantiles: int = 1,
    ):
        super().__init__()
        self.quantiles = quantiles
        self.regression = nn.Linear(hidden, objectives * quantiles, bias=False)
        sizes = [hidden] + [gating_hidden] * layers + [objectives]
        self.gating = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        self.logit_scale = nn.Parameter(torch.ones(1))
        self.register_buffer("transform", torch.eye(objectives))
        self.temperature = temperature
        self.pattern: list[int] = []  # GATE_TEXT's token ids, set from the model's tokenizer

    def bind(self, tokenizer: object) -> bool:
        """Take the gate's pattern from ``tokenizer``; ``False``: the prompt's pass is never shared."""
        self.pattern = tokenizer(GATE_TEXT, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # the rewards alone (token scores, attributes)
        return self.regression(hidden.float())

    def gate_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where each row's gate is read: the start of the last occurrence of the pattern."""
        k, found = len(self.pattern), []
        for row in input_ids.tolist():
            at = next((j for j in range(len(row) - k, -1, -1) if row[j : j + k] == self.pattern), None)
            if at is None:
                raise ValueError("ArmoRM's gate reads the assistant turn's opening, which this row lacks")
            found.append(at)
        return torch.tensor(found, device=input_ids.device)

    def read(self, at_end: torch.Tensor, at_gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, rewards)`` of rows from their hidden states at the end and at the gate."""
        rewards = self.regression(at_end.float())
        if self.quantiles > 1:  # QRM: (objectives, quantiles), an objective's reward the quantiles' mean
            rewards = rewards.reshape(len(rewards), -1, self.quantiles).mean(-1)
        x = at_gate.float()
        for i, layer in enumerate(self.gating):
            x = layer(x) if i == len(self.gating) - 1 else torch.relu(layer(x))
        gate = torch.softmax(x / self.temperature, dim=-1) * self.logit_scale[0]
        return (gate * (rewards @ self.transform.float())).sum(-1), rewards


class UncertainHead(nn.Module):
    """URM's head (``LlamaForSequenceClassificationWithNormal_Weights``), read at the last token: ``score``
    (bias-free) gives each of K attributes a mean and an uncertainty (2K outputs, in pairs), and ``fc``
    (Linear, SELU, Linear, SELU, Linear) weighs the K means; the score is their weighted sum."""

    def __init__(self, hidden: int, attributes: int):
        super().__init__()
        self.score = nn.Linear(hidden, 2 * attributes, bias=False)
        self.fc = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.SELU(),
            nn.Linear(hidden, hidden),
            nn.SELU(),
            nn.Linear(hidden, attributes),
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.read(hidden)[0].unsqueeze(-1)

    def read(self, at_end: torch.Tensor, at_gate: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, means)``: the weighted sum of the attributes' means, and the means."""
        x = at_end.float()
        means = self.score(x).unflatten(-1, (-1, 2))[..., 0]
        return (means * self.fc(x)).sum(-1), means


# ArmoRM's 19 objectives in its regression layer's order (its model card); QRM-Llama3.1's are the first 5.
ARMO_OBJECTIVES = (
    "helpsteer-helpfulness", "helpsteer-correctness", "helpsteer-coherence", "helpsteer-complexity",
    "helpsteer-verbosity", "ultrafeedback-overall_score", "ultrafeedback-instruction_following",
    "ultrafeedback-truthfulness", "ultrafeedback-honesty", "ultrafeedback-helpfulness", "beavertails-is_safe",
    "prometheus-score", "argilla-overall_quality", "argilla-judge_lm", "code-complexity", "code-style",
    "code-explanation", "code-instruction-following", "code-readability",
)  # fmt: skip


def objective_names(config: dict, k: int) -> list[str]:
    """The names of a gated head's ``k`` objectives: the config's labels where it names them all, else
    ArmoRM's (19) or HelpSteer2's five (5), else ``objective_0`` ..."""
    labels = config.get("id2label") or {}
    named = [labels.get(str(i), labels.get(i)) for i in range(k)]
    if all(n and not str(n).startswith("LABEL_") for n in named):
        return [str(n) for n in named]
    if k in (len(ARMO_OBJECTIVES), 5):
        return list(ARMO_OBJECTIVES[:k])
    return [f"objective_{i}" for i in range(k)]


def read_objectives(
    head: nn.Module, hidden: torch.Tensor, at_end: torch.Tensor, input_ids: torch.Tensor, weights: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score, objectives)`` (B,), (B, K) of a head with a score of its own beside its objectives'
    (:data:`MIXED`): its gate's or mixture's score, or with ``weights`` (K,) the objectives' weighted sum."""
    gate = (
        hidden[torch.arange(len(at_end)), head.gate_index(input_ids)] if isinstance(head, GatedHead) else None
    )
    score, objectives = head.read(at_end, gate)
    return (objectives @ weights.to(objectives) if weights is not None else score), objectives


BINS = 10  # LDL-Reward: each objective a distribution over 10 bins of [0, 1]
LDL_FILES = ("regression_layer.pt", "gating_layer.pt")  # its two heads' state dicts, beside the backbone


def _stack(state: dict[str, torch.Tensor]) -> nn.ModuleList:
    """The linear layers of a ``network.{i}`` Sequential's state dict, in order."""
    indices = sorted(
        {int(k.split(".")[1]) for k in state if k.startswith("network.") and k.endswith(".weight")}
    )
    layers = nn.ModuleList()
    for i in indices:
        w, b = state[f"network.{i}.weight"], state.get(f"network.{i}.bias")
        layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        layer.load_state_dict({"weight": w, **({"bias": b} if b is not None else {})})
        layers.append(layer)
    return layers


class DistributionHead(nn.Module):
    """LDL-Reward's head, read at the last token: a regression network (Linear and LeakyReLU layers) gives each
    objective a distribution over :data:`BINS` bins (a softmax), a gating network (the same kind of layers;
    ``softmax(x / temperature)`` when its config says ``softmax``) weighs the objectives, and the score is the
    expectation of the mixed distribution over the bins' values ``linspace(0, 1, BINS)``."""

    def __init__(self, regression: dict, gating: dict, temperature: float = 1.0, softmax: bool = False):
        super().__init__()
        self.regression, self.gating = _stack(regression), _stack(gating)
        self.temperature, self.softmax = temperature, softmax
        self.register_buffer("bins", torch.linspace(0, 1, BINS))

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            x = layer(x) if i == len(layers) - 1 else nn.functional.leaky_relu(layer(x))
        return x

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.read(hidden)[0].unsqueeze(-1)

    def read(self, at_end: torch.Tensor, at_gate: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, objectives)``: the mixture's expectation, and each objective's own expected value."""
        x = at_end.float()
        dist = self._run(self.regression, x).unflatten(-1, (-1, BINS)).softmax(-1)
        weights = self._run(self.gating, x)
        weights = (weights / self.temperature).softmax(-1) if self.softmax else weights
        objectives = (dist * self.bins).sum(-1)
        return (weights * objectives).sum(-1), objectives


HEADS = (
    nn.Linear,
    MLPHead,
    GatedHead,
    DistributionHead,
    UncertainHead,
)  # the score heads read at every position of a decoder
MIXED = (
    GatedHead,
    DistributionHead,
    UncertainHead,
)  # heads whose score is their own mix of their objectives' outputs


def build_head(
    layout: str, tensors: dict[str, torch.Tensor], config: dict, path: Path, dtype: torch.dtype
) -> nn.Module:
    """The head of a :mod:`rmkit.layouts` layout that is no one linear layer, from its weights (``tensors``:
    the checkpoint's head keys), its ``config`` and its directory; ``ValueError`` says what does not fit."""
    if layout in ("mlp-head", "grm"):  # INF-ORM, Qwen2.5-Math-RM: score.0, score.2; GRM: v_head.summary.*
        state = {k.split(".", 2 if layout == "grm" else 1)[-1]: v for k, v in tensors.items()}
        weights = [
            state[f"{i}.weight"] for i in sorted(int(k.split(".")[0]) for k in state if k.endswith(".weight"))
        ]
        if weights[-1].shape[0] != 1:
            raise ValueError(f"its score head has {weights[-1].shape[0]} outputs; rmkit reads one")
        head = MLPHead(weights[0].shape[1], sizes=[weights[0].shape[1]] + [w.shape[0] for w in weights])
        head.load_state_dict(state)
        return head.to(dtype)
    if layout == "ldl":  # two state-dict files, unpickled as tensors only (weights_only: no code runs)
        parts = []
        for name in LDL_FILES:
            try:
                parts.append(torch.load(path / name, map_location="cpu", weights_only=True))
            except Exception as e:  # noqa: BLE001 (weights_only refuses anything but tensors)
                raise ValueError(f"its {name} is not a plain state dict of tensors ({e})") from None
        head: Any = DistributionHead(*parts, config.get("temperature", 1.0), bool(config.get("softmax")))
        head.names = objective_names(config, head.regression[-1].out_features // BINS)
        return head.float()
    if layout == "decision-tree":  # score.weight (K, hidden) and score.bias (K,): K attributes
        weight = tensors["score.weight"]
        head = AttributeHead(weight.shape[1], weight.shape[0])
        head.load_state_dict({"weight": weight, "bias": tensors["score.bias"]})
        head.names = objective_names(config, weight.shape[0])
        return head.float()
    if layout == "urm":  # URM: score (2K outputs: a mean and an uncertainty each), weights.fc.{0,2,4}
        head = UncertainHead(tensors["score.weight"].shape[1], tensors["score.weight"].shape[0] // 2)
        head.load_state_dict({k.removeprefix("weights."): v for k, v in tensors.items()})
        head.names = objective_names(config, head.score.out_features // 2)
        return head.float()
    head = _gated(tensors, config)
    head.names = objective_names(config, head.transform.shape[0])
    return head


def _gated(tensors: dict[str, torch.Tensor], config: dict) -> GatedHead:
    """ArmoRM's (or QRM's, with ``num_quantiles``) gated head, kept in fp32."""
    regression = tensors["regression_layer.weight"]
    quantiles = int(config.get("num_quantiles") or 1)
    objectives = tensors["reward_transform_matrix"].shape[0]
    if regression.shape[0] != objectives * quantiles:
        raise ValueError(
            f"its regression layer has {regression.shape[0]} outputs, not {objectives} x {quantiles}"
        )
    layers = sum(1 for k in tensors if k.startswith("gating.layers.") and k.endswith(".weight")) - 1
    hidden_dim = tensors["gating.layers.0.weight"].shape[0] if layers else objectives
    head = GatedHead(
        regression.shape[1], objectives, hidden_dim, layers, config.get("gating_temperature", 10), quantiles
    )
    state = {"regression.weight": regression, "logit_scale": tensors["gating.logit_scale"],
             "transform": tensors["reward_transform_matrix"]}  # fmt: skip
    state |= {
        "gating." + k.removeprefix("gating.layers."): v
        for k, v in tensors.items()
        if k.startswith("gating.layers.")
    }
    head.load_state_dict(state)
    return head.float()
