"""The request and reply shapes the server speaks: rmkit's own and those RL frameworks already send.

Each protocol is a parser from a request's JSON body to a :class:`Call` (what to score, and how to shape
the reply from the scores). A parser raises :class:`RequestError` naming the field that is wrong; the app
turns it into a 4xx reply. Nothing here touches the model, the queue or HTTP.

rmkit's own (``POST /score``) is strict: an unknown field is an error, so a typo such as ``"normalise"``
is caught. The foreign protocols accept and ignore fields rmkit does not use (their clients send
options of their own servers, such as vLLM's ``priority``), as those servers do.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rmkit.data.formats import Example, examples_from


class RequestError(Exception):
    """A request the server will not run: ``status`` is the HTTP status, ``field`` the culprit (if one)."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


@dataclass
class Call:
    """One parsed request: ``examples`` to render and tokenise, or ``token_ids`` already tokenised (one of
    them), and ``reply(scores, tokens)`` to build the JSON reply from the scores (in item order) and the
    number of tokens scored."""

    reply: Callable[[list[float], int], Any]
    examples: list[Example] | None = None
    token_ids: list[list[int]] | None = None
    normalize: bool = False

    @property
    def items(self) -> int:
        return len(self.examples if self.examples is not None else self.token_ids or [])


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}", status=400)
    return body


def _list(body: dict[str, Any], name: str, *, of: type | tuple[type, ...] = str) -> list[Any]:
    """``body[name]``, checked to be a list of ``of``."""
    value = body[name]
    if not isinstance(value, list):
        raise RequestError(f"'{name}' must be a list, got {type(value).__name__}", field=name)
    for i, item in enumerate(value):
        if not isinstance(item, of):
            want = of.__name__ if isinstance(of, type) else " or ".join(t.__name__ for t in of)
            raise RequestError(
                f"'{name}' item {i} must be a {want}, got {type(item).__name__}", field=f"{name}[{i}]"
            )
    return value


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false, got {value!r}", field=name)
    return value


def _conversation(value: Any, name: str) -> list[dict[str, Any]]:
    """A list of ``{"role", "content"}`` messages ending with the scored answer. Content is a string, or (not
    the answer's) OpenAI's list of parts: ``{"type": "text", "text"}``, ``{"type": "image_url",
    "image_url": {"url": data URL}}`` and ``{"type": "input_audio", "input_audio": {"data": base64,
    "format": "wav"}}``, kept as rmkit's ``{"type": "image", "image": url}`` and ``{"type": "audio",
    "audio": {...}}`` parts; a video as ``{"type": "video_url", "video_url": {"url": data URL}}`` (as vLLM
    takes it) or ``{"type": "video", "video": data URL or a list of its frames' data URLs}``, kept as
    ``{"type": "video", "video": ...}``."""
    if not isinstance(value, list) or not value:
        raise RequestError(f"'{name}' must be a non-empty list of messages", field=name)
    out = []
    for j, m in enumerate(value):
        content = m.get("content") if isinstance(m, dict) else None
        parts = isinstance(content, list) and j < len(value) - 1
        if not (
            isinstance(m, dict) and isinstance(m.get("role"), str) and (isinstance(content, str) or parts)
        ):
            raise RequestError(
                f"'{name}' message {j} must be an object with string 'role' and 'content' (a list of parts "
                "for a message before the answer)",
                field=f"{name}[{j}]",
            )
        if m["role"] not in ROLES:
            raise RequestError(
                f"'{name}' message {j} has role {m['role']!r}; expected one of {', '.join(ROLES)}",
                field=f"{name}[{j}].role",
            )
        out.append(
            {"role": m["role"], "content": _parts(content, f"{name}[{j}].content") if parts else content}
        )
    return out


def _parts(content: list[Any], name: str) -> list[dict[str, Any]]:
    """OpenAI's content parts as rmkit's (:func:`_conversation`)."""
    out: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise RequestError("an image_url part needs 'image_url': {'url': ...}", field=f"{name}[{k}]")
            out.append({"type": "image", "image": url})
        elif kind in ("video_url", "video"):
            url = part.get(kind)
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) and not (
                isinstance(url, list) and url and all(isinstance(u, str) for u in url)
            ):
                raise RequestError(f"a {kind} part needs a data URL or a list of frames' data URLs",
                                   field=f"{name}[{k}]")  # fmt: skip
            out.append({"type": "video", "video": url})
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            out.append({"type": "audio", "audio": part["input_audio"]})  # {data: base64, format}
        else:
            raise RequestError("a part must be {type: text, text}, {type: image_url, image_url: {url}}, "
                               "{type: video_url, video_url: {url}} or {type: input_audio, input_audio: "
                               "{data, format}}", field=f"{name}[{k}]")  # fmt: skip
    return out


def with_images(examples: list[Example]) -> list[Example]:
    """``examples`` whose image and audio parts are opened (:func:`rmkit.data.vision.opened`,
    :func:`rmkit.data.audio.heard`); a bad image or clip is a :class:`RequestError` naming its part (413 over
    the pixel or length limit)."""
    from rmkit.data.audio import heard
    from rmkit.data.images import ImageTooLarge
    from rmkit.data.sounds import AudioTooLong
    from rmkit.data.vision import opened
    from rmkit.errors import DataError

    try:
        return [heard(opened(ex)) for ex in examples]
    except DataError as e:
        status = 413 if isinstance(e, (ImageTooLarge, AudioTooLong)) else 422
        raise RequestError(f"item {e.row}: {e.reason}", field=e.field, status=status) from None


ROLES = ("system", "user", "assistant")

# --- rmkit: POST /score ------------------------------------------------------------------------------

SCORE_FIELDS = {"prompts", "responses", "messages", "texts", "normalize"}


def parse_score(body: Any) -> Call:
    """``{"prompts": [...], "responses": [...]}``, ``{"messages": [[...], ...]}`` or ``{"texts": [...]}``
    (plus ``"normalize": true``) → ``{"scores": [...]}``, one float per item, in order."""
    body = _object(body)
    unknown = sorted(set(body) - SCORE_FIELDS)
    if unknown:
        raise RequestError(
            f"unknown field '{unknown[0]}'; expected {', '.join(sorted(SCORE_FIELDS))}", field=unknown[0]
        )
    given = [k for k in ("prompts", "messages", "texts") if k in body]
    if len(given) != 1:
        raise RequestError("send exactly one of 'prompts' (with 'responses'), 'messages' or 'texts'")
    if given == ["prompts"]:
        if "responses" not in body:
            raise RequestError("'prompts' needs 'responses', one per prompt", field="responses")
        prompts = _list(body, "prompts", of=(str, list))
        responses = _list(body, "responses")
        if len(prompts) != len(responses):
            raise RequestError(f"{len(prompts)} prompts but {len(responses)} responses", field="responses")
        prompts = [
            p if isinstance(p, str) else _conversation(p, f"prompts[{i}]") for i, p in enumerate(prompts)
        ]
        examples = with_images(examples_from(prompts, responses))
    elif given == ["messages"]:
        conversations = _list(body, "messages", of=list)
        examples = with_images(
            examples_from(messages=[_conversation(c, f"messages[{i}]") for i, c in enumerate(conversations)])
        )
    else:
        examples = examples_from(texts=_list(body, "texts"))
    return Call(
        lambda scores, tokens: {"scores": scores}, examples, normalize=_flag(body, "normalize", False)
    )


# --- OpenRLHF: POST /get_reward ---------------------------------------------------------------------


def parse_openrlhf(body: Any, ctx: Context) -> Call:
    """OpenRLHF's remote RM: ``{"query": [...], "prompts": [...], "labels": [...]}`` (older clients send only
    ``query``) → ``{"rewards": [...], "scores": [...], "extra_logs": {}}``, each list as long as ``query``.

    A query is the decoded full sequence, chat template and special tokens included; clients before 0.8.3
    left pad tokens on it, which are stripped. Empty lists get empty lists (OpenRLHF sends them to every
    server but the first when given several).
    """
    body = _object(body)
    if "query" not in body:
        raise RequestError("'query' is required: the full texts to score", field="query")
    texts = [ctx.strip_padding(q) for q in _list(body, "query")]
    for name in ("prompts", "labels"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise RequestError(f"'{name}' must be a list", field=name)

    def reply(scores: list[float], tokens: int) -> dict[str, Any]:
        return {"rewards": scores, "scores": scores, "extra_logs": {}}

    return Call(reply, examples_from(texts=texts))


# --- vLLM: POST /pooling and /classify (and /v1/...) ---------------------------------------------------


def _vllm_items(body: dict[str, Any]) -> tuple[list[Example] | None, list[list[int]] | None]:
    """vLLM's inputs: ``input`` as a text, texts, token ids or lists of token ids, or ``messages``, one
    conversation ending with the answer to score."""
    if "messages" in body:
        return with_images(examples_from(messages=[_conversation(body["messages"], "messages")])), None
    if "input" not in body:
        raise RequestError("send 'input' (text, texts or token ids) or 'messages'", field="input")
    value = body["input"]
    if isinstance(value, str):
        return examples_from(texts=[value]), None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return examples_from(texts=value), None
    if isinstance(value, list) and _token_ids(value):
        return None, [value]
    if isinstance(value, list) and all(isinstance(v, list) and _token_ids(v) for v in value):
        return None, value
    raise RequestError("'input' must be a string, a list of strings or (lists of) token ids", field="input")


def _activation(body: dict[str, Any], default: bool) -> bool:
    """``use_activation`` (vLLM 0.11.2 on), else the older ``activation``, else ``default``."""
    for name in ("use_activation", "activation"):
        if body.get(name) is not None:
            return _flag(body, name, default)
    return default


def _vllm_reply(kind: str, model: str, data: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
    """vLLM's reply around ``data``: an id of ``kind``, the time, the model and the tokens used."""
    usage = {
        "prompt_tokens": tokens,
        "total_tokens": tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }
    return {
        "id": _id(kind),
        "object": "list",
        "created": _now(),
        "model": model,
        "data": data,
        "usage": usage,
    }


def parse_classify(body: Any, ctx: Context) -> Call:
    """vLLM's ``/classify``: ``{"model", "input" | "messages", "use_activation"}`` → ``{"id", "object":
    "list", "created", "model", "data": [{"index", "label", "probs": [p], "num_classes": 1}], "usage"}``.

    ``p`` is the sigmoid of the score, as vLLM gives for one label, or the raw score with
    ``"use_activation": false`` (or ``"activation": false``, which verl before 0.8 sends).
    """
    body = _object(body)
    examples, ids = _vllm_items(body)
    activate = _activation(body, True)
    model = body.get("model") or ctx.model_name

    def reply(scores: list[float], tokens: int) -> dict[str, Any]:
        data = [
            {"index": i, "label": ctx.label, "probs": [sigmoid(s) if activate else s], "num_classes": 1}
            for i, s in enumerate(scores)
        ]
        return _vllm_reply("classify", model, data, tokens)

    return Call(reply, examples, ids)


POOLING_TASKS = (None, "classify", "reward")


def parse_pooling(body: Any, ctx: Context) -> Call:
    """vLLM's ``/pooling``: ``{"model", "input" | "messages", "task"}`` → ``{"id", "object": "list",
    "created", "model", "data": [{"index", "object": "pooling", "data": [score]}], "usage"}``.

    The score is raw (a reward, as vLLM's reward pooling gives it); ``"use_activation": true`` gives its
    sigmoid. Per-token tasks (``token_classify``) are refused: this server reads one score per sequence.
    """
    body = _object(body)
    if body.get("task") not in POOLING_TASKS:
        raise RequestError(
            f"task {body['task']!r} is not served; this server gives one score per sequence (task 'classify')",
            field="task",
        )
    examples, ids = _vllm_items(body)
    activate = _activation(body, False)
    model = body.get("model") or ctx.model_name

    def reply(scores: list[float], tokens: int) -> dict[str, Any]:
        data = [
            {"index": i, "object": "pooling", "data": [sigmoid(s) if activate else s]}
            for i, s in enumerate(scores)
        ]
        return _vllm_reply("pool", model, data, tokens)

    return Call(reply, examples, ids)


# --- slime: POST /reward -----------------------------------------------------------------------------


def parse_slime(body: Any, ctx: Context) -> Call:
    """slime's remote RM: ``{"prompt", "response", "label"}`` → ``{"<reward_key>": score}``, or the bare
    number when the server's ``reward_key`` is empty (slime reads the whole body, or ``body[--reward-key]``).

    ``prompt`` is a list of messages, or a string: already chat-templated when it holds special tokens
    (slime's ``--apply-chat-template``; then prompt + response is scored verbatim), else the user's turn.
    """
    body = _object(body)
    for name in ("prompt", "response"):
        if name not in body:
            raise RequestError(f"'{name}' is required", field=name)
    prompt, response = body["prompt"], body["response"]
    if not isinstance(response, str):
        raise RequestError(f"'response' must be a string, got {type(response).__name__}", field="response")
    if isinstance(prompt, list):
        examples = with_images(examples_from([_conversation(prompt, "prompt")], [response]))
    elif not isinstance(prompt, str):
        raise RequestError(
            f"'prompt' must be a string or a list of messages, got {type(prompt).__name__}", field="prompt"
        )
    elif ctx.is_rendered(prompt):
        examples = examples_from(texts=[prompt + response])
    else:
        examples = examples_from([prompt], [response])
    key = ctx.reward_key
    return Call(lambda scores, tokens: {key: scores[0]} if key else scores[0], examples)


@dataclass
class Context:
    """What the foreign protocols need to know of the server: names, and two tokenizer-aware rules."""

    model_name: str
    reward_key: str = "reward"
    label: str | None = "LABEL_0"
    strip_padding: Callable[[str], str] = lambda text: text
    is_rendered: Callable[[str], bool] = lambda text: False


def routes(ctx: Context) -> list[tuple[str, Callable[[Any], Call]]]:
    """Every scoring route with its parser."""

    def bind(parse: Callable[[Any, Context], Call]) -> Callable[[Any], Call]:
        return lambda body: parse(body, ctx)

    vllm = [
        (p, bind(f))
        for name, f in (("pooling", parse_pooling), ("classify", parse_classify))
        for p in (f"/{name}", f"/v1/{name}")
    ]
    return [
        ("/score", parse_score),
        ("/get_reward", bind(parse_openrlhf)),
        *vllm,
        ("/reward", bind(parse_slime)),
    ]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _now() -> int:
    return int(time.time())


def _token_ids(value: Sequence[Any]) -> bool:
    return bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
