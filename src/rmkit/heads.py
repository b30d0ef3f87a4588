"""The score heads rmkit reads at every position of a decoder: one linear layer (every trainer's), or a
two-layer MLP (:class:`MLPHead`, INF-ORM's)."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Sequential):
    """A two-layer score head, ``Linear → ReLU → Linear``, read at the same position as a linear one
    (INF-ORM's; :mod:`rmkit.layouts` reads its ``score.0``/``score.2`` weights). Not linear, so not writable
    as a plain one-label classifier."""

    def __init__(self, hidden: int, labels: int = 1):
        super().__init__(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, labels))


def head_dtype(head: nn.Module) -> torch.dtype:
    return next(head.parameters()).dtype


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


HEADS = (nn.Linear, MLPHead, GatedHead)  # the score heads read at every position of a decoder
