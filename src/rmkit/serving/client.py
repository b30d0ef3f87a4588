"""A reward function for TRL's ``GRPOTrainer`` (and any loop that wants ``f(prompts, completions)``).

``GRPOTrainer`` calls each of its ``reward_funcs`` with keyword arguments ``prompts``, ``completions``,
``completion_ids`` and the data set's other columns, and expects one float per completion. Plain data
gives strings; conversational data gives message lists, each completion a list holding the assistant's
message. :func:`reward_function` scores both, in this process or through a running ``rmkit serve``::

    from rmkit import reward_function
    trainer = GRPOTrainer(model=..., reward_funcs=[reward_function("path/to/rm")], ...)
    trainer = GRPOTrainer(model=..., reward_funcs=[reward_function("http://127.0.0.1:8000")], ...)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rmkit.errors import RMKitError
from rmkit.modeling import RewardModel
from rmkit.serving.app import API_KEY_ENV


def score_request(prompts: Sequence[Any], completions: Sequence[Any]) -> dict[str, Any]:
    """The ``POST /score`` body for GRPO's ``prompts`` and ``completions`` (plain or conversational)."""
    if len(prompts) != len(completions):
        raise RMKitError(f"{len(prompts)} prompts but {len(completions)} completions")
    if prompts and isinstance(prompts[0], list):
        messages = []
        for prompt, completion in zip(prompts, completions, strict=True):
            turns = (
                completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            )
            messages.append([_message(m) for m in (*prompt, *turns)])
        return {"messages": messages}
    return {"prompts": list(prompts), "responses": [_text(c) for c in completions]}


def _message(m: dict[str, Any]) -> dict[str, str]:
    return {"role": m["role"], "content": m.get("content") or ""}


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # a conversational completion with a plain prompt
        return "".join(m.get("content") or "" for m in completion)
    return completion


def reward_function(
    model: str | RewardModel,
    *,
    normalize: bool = False,
    api_key: str | None = None,
    timeout: float = 300.0,
    name: str = "rmkit_reward",
) -> Callable[..., list[float]]:
    """``f(prompts, completions, **kwargs) -> list[float]`` scoring with ``model``: a loaded
    :class:`RewardModel`, a checkpoint (loaded here once), or the URL of an ``rmkit serve``
    (``http://host:port``, posted to ``/score`` with ``api_key`` or ``$RMKIT_API_KEY`` as bearer token).

    ``name`` is the function's ``__name__``, which TRL logs its rewards under (``rewards/<name>/mean``).
    """
    if isinstance(model, str) and model.startswith(("http://", "https://")):
        scorer = _remote(model, api_key or os.environ.get(API_KEY_ENV), timeout)
    else:
        scorer = _local(model)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return scorer({**score_request(prompts, completions), "normalize": normalize})

    reward.__name__ = reward.__qualname__ = name
    return reward


def _local(model: str | Path | Any) -> Callable[[dict[str, Any]], list[float]]:
    """Score in this process with ``model``: a loaded model, or a checkpoint read as its kind (a process
    RM, a judge, a multi-attribute head: :func:`rmkit.kinds.load`, which refuses one without a trained head),
    each completion's score as ``rmkit serve`` answers it."""
    from rmkit import kinds

    if isinstance(model, (str, Path)):
        kind, rm = kinds.load(model)
    else:
        kind, rm = kinds.of_model(model), model
    why = kind.servable(rm)
    if why is not None:
        raise RMKitError(f"{model}: {why}")

    def scorer(body: dict[str, Any]) -> list[float]:
        reading = kinds.Reading()
        if body.get("normalize") and not getattr(rm, "normalizes", False):
            raise RMKitError("normalize: the model stores no score mean and std to normalise with")
        if "messages" in body:
            records = [{"messages": m} for m in body["messages"]]
        else:
            records = [
                {"prompt": p, "response": r} for p, r in zip(body["prompts"], body["responses"], strict=True)
            ]
        examples = kind.examples(enumerate(records, 1), "reward_function", reading, None)
        scores = [kind.values(rm, raw)[0] for _, raw in kind.score(rm, examples, reading)]
        return rm.normalize(scores) if body.get("normalize") else scores

    return scorer


def _remote(url: str, api_key: str | None, timeout: float) -> Callable[[dict[str, Any]], list[float]]:
    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/score") else "/score")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def post(body: dict[str, Any]) -> list[float]:
        request = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read())["scores"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise RMKitError(f"{endpoint} answered {e.code}: {detail}") from None

    return post
