"""A reward function for TRL's ``GRPOTrainer`` (and any loop that wants ``f(prompts, completions)``).

``GRPOTrainer`` calls each of its ``reward_funcs`` with keyword arguments ``prompts``, ``completions``,
``completion_ids`` and the data set's other columns, and expects one float per completion. Plain data
gives strings; conversational data gives message lists, each completion a list holding the assistant's
message. With a VLM policy the prompts' user turns hold ``{"type": "image", "image": <PIL image>}`` parts
(TRL puts the data set's ``image``/``images`` there), which are sent as OpenAI ``image_url`` parts holding
PNG data URLs. :func:`reward_function` scores all of them, in this process or through a running
``rmkit serve``::

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


def score_request(
    prompts: Sequence[Any], completions: Sequence[Any], images: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The ``POST /score`` body for GRPO's ``prompts`` and ``completions`` (plain or conversational);
    ``images`` (one list, or one image, a prompt: TRL's ``images``/``image`` column) go before the first user
    turn's text of a prompt that holds no image part yet."""
    if len(prompts) != len(completions):
        raise RMKitError(f"{len(prompts)} prompts but {len(completions)} completions")
    if prompts and isinstance(prompts[0], list):
        messages = []
        for k, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            turns = (
                completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            )
            shown = _with_images(prompt, images[k]) if images is not None else prompt
            messages.append([_message(m) for m in (*shown, *turns)])
        return {"messages": messages}
    if images is not None and any(i is not None for i in images):
        raise RMKitError("images go with conversational prompts (message lists), as TRL's VLM training gives")
    return {"prompts": list(prompts), "responses": [_text(c) for c in completions]}


def _with_images(prompt: list[dict[str, Any]], images: Any) -> list[dict[str, Any]]:
    """``prompt`` with ``images`` as image parts before its first user turn's text, unless it has image parts."""
    images = [] if images is None else images if isinstance(images, (list, tuple)) else [images]
    has_parts = any(isinstance(m.get("content"), list) and any(p.get("type") == "image" for p in m["content"])
                    for m in prompt)  # fmt: skip
    first = next((i for i, m in enumerate(prompt) if m["role"] == "user"), None)
    if not images or has_parts or first is None:
        return prompt
    content = prompt[first].get("content") or ""
    text = content if isinstance(content, list) else [{"type": "text", "text": content}]
    parts = [{"type": "image", "image": image} for image in images] + text
    return [*prompt[:first], {**prompt[first], "content": parts}, *prompt[first + 1 :]]


def _message(m: dict[str, Any]) -> dict[str, Any]:
    content = m.get("content") or ""
    if isinstance(content, list):  # parts: text as it is, images as OpenAI image_url parts (data URLs)
        content = [
            {"type": "image_url", "image_url": {"url": _data_url(p.get("image"))}}
            if p.get("type") == "image"
            else p
            for p in content
        ]
    return {"role": m["role"], "content": content}


def _data_url(image: Any) -> str:
    """A PNG data URL of ``image`` (a PIL image, encoded bytes or a local file's path; a data URL as it is)."""
    if isinstance(image, str) and image.startswith("data:"):
        return image
    import base64
    import io

    from PIL import Image

    if not isinstance(image, Image.Image):
        if image is None:
            raise RMKitError("an image part of a prompt holds no image (TRL puts it under 'image')")
        image = Image.open(io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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
        images = kwargs.get("images", kwargs.get("image"))
        return scorer({**score_request(prompts, completions, images), "normalize": normalize})

    reward.__name__ = reward.__qualname__ = name
    return reward


def _local(model: str | Path | Any) -> Callable[[dict[str, Any]], list[float]]:
    """Score in this process with ``model``: a loaded model, or a checkpoint read as its kind (a process
    RM, a judge, a multi-attribute head, a vision RM: :func:`rmkit.kinds.load`, which refuses one without a
    trained head), each completion's score as ``rmkit serve`` answers it (its body read by the server's parser,
    images included)."""
    from rmkit import kinds

    if isinstance(model, (str, Path)):
        kind, rm = kinds.load(model)
    else:
        kind, rm = kinds.of_model(model), model
    why = kind.servable(rm)
    if why is not None:
        raise RMKitError(f"{model}: {why}")

    def scorer(body: dict[str, Any]) -> list[float]:
        if body.get("normalize") and not getattr(rm, "normalizes", False):
            raise RMKitError("normalize: the model stores no score mean and std to normalise with")
        scores = _kind_scores(kind, rm, body)
        return rm.normalize(scores) if body.get("normalize") else scores

    return scorer


def _kind_scores(kind: Any, model: Any, body: dict[str, Any]) -> list[float]:
    """One score a conversation of ``body`` (a ``/score`` body), read as the server reads it."""
    from rmkit.kinds import Reading
    from rmkit.serving.protocols import RequestError, parse_score

    try:
        call = parse_score({k: v for k, v in body.items() if k != "normalize"})
    except RequestError as e:
        raise RMKitError(f"{e.field or 'request'}: {e}") from None
    return [
        kind.values(model, raw)[0] if raw is not None else float("nan")
        for _, raw in kind.score(model, call.examples or [], Reading())
    ]


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
