"""A verl custom reward function that asks a running ``rmkit serve`` for the reward of each response.

verl has no setting that names an outside reward-model server (its reward loop starts vLLM servers of its
own), but it calls a custom reward function for every sample. Point it at this file::

    reward.custom_reward_function.path=examples/verl_reward.py reward.custom_reward_function.name=compute_score

(``custom_reward_function.path=...`` and ``.name=...`` in verl before 0.8), with ``RMKIT_URL`` (default
``http://127.0.0.1:8000``) and, if the server has one, ``RMKIT_API_KEY`` in the workers' environment.

The prompt is read from ``extra_info["question"]`` (as verl's data preprocessing scripts store it) or
``extra_info["prompt"]``; the server renders prompt and response with the reward model's own template.

Images (a vision-language reward model). verl hands a reward function ``extra_info`` and not the sample's
``images``, and its reward loop's own reward-model request sends the chat-templated text alone (the images
left out), so put the images into ``extra_info`` where the data is prepared, beside the question: in verl's
``examples/data_preprocess/geo3k.py``, ``"extra_info": {..., "question": prompt, "images": images}``. They
go to the server as OpenAI-style ``image_url`` parts (data URLs): each ``<image>`` of the question is where
its image goes (verl's placeholder), and without placeholders the images come first. An image may be a PIL
image, bytes, a ``datasets`` dict (``bytes``/``path``), a file path, or a data or http(s) URL (fetched by the
server only under ``--allow-remote-images``). A question given as chat messages may hold verl's own image
parts (``{"type": "image", "image": ...}``) instead.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import urllib.request

_MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8": "image/jpeg", b"GIF8": "image/gif", b"RIFF": "image/webp"}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    extra_info = extra_info or {}
    prompt = extra_info.get("question") or extra_info.get("prompt") or ""
    images = list(extra_info.get("images") or [])
    if isinstance(prompt, list):  # chat messages
        conversation = [_message(m, images) for m in prompt]
        body = {"messages": [[*conversation, {"role": "assistant", "content": solution_str}]]}
    elif images:
        turn = {"role": "user", "content": _parts(prompt, images)}
        body = {"messages": [[turn, {"role": "assistant", "content": solution_str}]]}
    else:
        body = {"prompts": [prompt], "responses": [solution_str]}
    headers = {"Content-Type": "application/json"}
    if os.environ.get("RMKIT_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['RMKIT_API_KEY']}"
    url = os.environ.get("RMKIT_URL", "http://127.0.0.1:8000").rstrip("/") + "/score"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=300) as reply:
        return json.loads(reply.read())["scores"][0]


def _message(message: dict, images: list) -> dict:
    """A chat message with its image parts (verl's ``{"type": "image", "image": ...}``) as ``image_url`` parts
    and, in a text content, each ``<image>`` as the next of ``images``."""
    content = message.get("content")
    if isinstance(content, str):
        return {
            **message,
            "content": _parts(content, images, first=False) if "<image>" in content else content,
        }
    parts = []
    for part in content or []:
        if part.get("type") in ("image", "image_url"):
            image = part.get("image", part.get("image_url"))
            parts.append(_image_part(image["url"] if isinstance(image, dict) and "url" in image else image))
        else:
            parts.append(part)
    return {**message, "content": parts}


def _parts(text: str, images: list, first: bool = True) -> list[dict]:
    """``text`` as parts, each ``<image>`` the next image; without one, the ``images`` first (if ``first``)."""
    pieces = re.split(r"(<image>)", text)
    if "<image>" not in pieces and first:
        pieces = ["<image>"] * len(images) + pieces
    parts = []
    for piece in pieces:
        if piece == "<image>":
            if not images:
                raise ValueError(
                    "the question has more <image> placeholders than extra_info['images'] images"
                )
            parts.append(_image_part(images.pop(0)))
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def _image_part(image) -> dict:
    """An OpenAI-style ``image_url`` part of ``image`` (module docstring's kinds of image)."""
    if isinstance(image, dict):  # what `datasets` gives: {"bytes": ..., "path": ...}
        image = image.get("bytes") or image.get("path")
    if isinstance(image, str) and image.startswith(("data:", "http://", "https://")):
        return {"type": "image_url", "image_url": {"url": image}}
    if isinstance(image, str):
        with open(image, "rb") as f:
            image = f.read()
    if not isinstance(image, (bytes, bytearray)):  # a PIL image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image = buffer.getvalue()
    kind = next((t for magic, t in _MAGIC.items() if bytes(image).startswith(magic)), "image/png")
    url = f"data:{kind};base64,{base64.b64encode(bytes(image)).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}
