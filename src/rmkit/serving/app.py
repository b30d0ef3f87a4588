"""The ASGI app of ``rmkit serve``: routes, limits and auth around the batcher.

A scoring request goes: check the key → read the body (at most ``max_body_mb``) → parse it with its
protocol (:mod:`rmkit.serving.protocols`) → render and tokenise its items in the tokenizer thread (over-long ones truncated by
rmkit's rule, or refused with ``truncation="refuse"``) → queue the token ids (:class:`Batcher`) → await its
scores (at most ``request_timeout`` seconds) → reply in the protocol's shape. Each step's failure is a 4xx
or 503 reply with ``{"error": {"message", "type", "code", "param"}}`` (``param`` names the bad field), the
shape OpenAI-style clients read; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rmkit import inference, kinds, runtime
from rmkit.defaults import API_KEY_ENV
from rmkit.errors import RMKitError
from rmkit.serving import protocols
from rmkit.serving.batcher import Batcher, QueueFull
from rmkit.serving.config import ServeConfig
from rmkit.serving.protocols import Call, RequestError
from rmkit.serving.remote_images import RemoteImages
from rmkit.serving.telemetry import Telemetry
from rmkit.serving.tokenizing import TokenizerThread

log = logging.getLogger(__name__)
_REQUEST_IDS = itertools.count(1)


class Scorer:
    """The app's state: the model and its kind, the kind's tokenizer, the batcher and the counters."""

    def __init__(self, rm: Any, config: ServeConfig):
        self.rm, self.config = rm, config
        self.kind = kinds.of_model(rm, where=config.model)
        # a process RM reads each item's response as a solution, cut into steps at the separator
        self.reading = kinds.Reading(max_length=config.max_tokens, aggregate=config.aggregate)
        if config.normalize and not getattr(rm, "normalizes", False):
            raise RMKitError("--normalize: the model stores no score mean and std to normalise with")
        rm.prefix_sharing = getattr(rm, "prefix_sharing", True) and config.prefix_sharing  # off, never on
        self.api_key = config.api_key or os.environ.get(API_KEY_ENV) or None
        self.telemetry = Telemetry()
        self.batcher = Batcher(
            rm,
            batch_tokens=config.batch_tokens or inference.token_budget(rm),
            max_rows=config.max_rows,
            max_wait=config.max_wait_ms / 1000,
            max_queue=config.max_queue,
            cross_request=config.cross_request_batching,
            batch_cost=config.batch_cost,
            prepare=self.prepare,
            telemetry=self.telemetry,
        )
        self.tokenizer = self.kind.tokenizer(rm, self.reading)
        self.tokenizing = TokenizerThread(self.tokenizer.tokenize)
        self.model_name = config.served_model_name or config.model
        self.remote_images = (
            RemoteImages(int(config.remote_image_mb * (1 << 20)), config.remote_image_timeout)
            if config.allow_remote_images
            else None
        )
        self.vocab = rm.model.get_input_embeddings().num_embeddings
        self.context = protocols.Context(
            self.model_name,
            reward_key=config.reward_key,
            label=(getattr(rm.model.config, "id2label", None) or {}).get(0, "LABEL_0"),
            strip_padding=padding_stripper(rm.tokenizer),
            is_rendered=template_detector(rm.tokenizer),
        )

    def prepare(self) -> None:
        """Run in the batch worker before it serves: warm up a compiled model (one graph for batches of
        any shape, one for a single row) and measure the cost of a forward pass (unless configured)."""
        if self.config.compile:
            warm_up(self.rm)
        if self.batcher.batch_cost is None:
            self.batcher.batch_cost = min(self.batcher.batch_tokens, inference.batch_cost(self.rm))
        log.info(
            "rmkit serve: batches of up to %d tokens (--batch-tokens); a forward pass's fixed cost, which "
            "decides when a batch of mixed lengths is split by length, is %.0f tokens' worth (--batch-cost)",
            self.batcher.batch_tokens,
            self.batcher.batch_cost,
        )

    async def sequences(self, call: Call) -> kinds.Sequences:
        """A call's items as the kind reads them, by rmkit's rendering and truncation rule (module docstring):
        text is tokenised in the tokenizer thread (:mod:`rmkit.serving.tokenizing`), token ids cut alike."""
        if call.token_ids is not None:
            try:
                rows = [[self.tokenizer.truncate(list(ids))] for ids in call.token_ids]
            except RMKitError as e:  # a kind that needs the text (a process RM finds steps in it)
                raise RequestError(str(e), field="input") from None
            for i, ids in enumerate(call.token_ids):
                if min(ids) < 0 or max(ids) >= self.vocab:
                    raise RequestError(
                        f"item {i} holds a token id outside 0..{self.vocab - 1}", field="input"
                    )
        else:
            media = (("images", "image", "image"), ("videos", "video", "image"), ("audios", "audio", "audio"))
            for field, part, reads in media:  # a video is read where images are (a vision-language RM)
                if reads not in self.kind.modality and any(
                    getattr(ex, field, None) for ex in call.examples or []
                ):
                    modality = self.kind.modality.replace("+", " and ")
                    raise RequestError(
                        f"this model reads {modality} only: send no {part} parts", field="messages"
                    )
            try:
                rows = await self.tokenizing.submit(call.examples or [])
            except Exception as e:  # a chat template that refuses the conversation, say: the input's fault
                raise RequestError(f"cannot render or tokenise the items: {type(e).__name__}: {e}") from None
        batch = self.kind.sequences(rows)
        limit = self.tokenizer.max_length
        for i, cut in enumerate(batch.cut):
            if cut is None:
                raise RequestError(
                    f"item {i}: nothing of it fits the limit of {limit} tokens", field=f"item {i}"
                )
            if cut and self.config.truncation == "refuse":
                raise RequestError(
                    f"item {i} is longer than the limit of {limit} tokens (--max-tokens; --truncation left "
                    "would cut it)",
                    field=f"item {i}",
                )
        return batch

    def authorised(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.api_key)


@torch.inference_mode()
def warm_up(rm: Any) -> None:
    """Compile every graph a request can need before the first one comes: batches of one row and of
    several, and, where prompts are shared, prefix passes and continuations of one and of several rows
    and tokens (compilation specialises on sizes of 1)."""
    rm.score(texts=["warm up", "warm up the compiled model"])
    rm.score(texts=["warm up"])
    if not rm.shares_prefixes:
        return
    pad = rm.pad_token_id
    for prefixes in (1, 2):
        ids = torch.full((prefixes, 20), pad, dtype=torch.long, device=rm.device)
        cache, mask = rm.prefix_cache(ids), torch.ones_like(ids)
        for rows in (1, 2):
            for length in (1, 3):
                cont = torch.full((rows, length), pad, dtype=torch.long, device=rm.device)
                index = torch.arange(rows, device=rm.device) % prefixes
                rm.score_after(cache, index, mask, cont, torch.ones_like(cont))


def padding_stripper(tokenizer: Any) -> Callable[[str], str]:
    """Strip pad tokens off both ends of a decoded sequence (OpenRLHF before 0.8.3 sent them); with pad =
    EOS, one EOS stays at the end, where the answer ended."""
    pad, eos = tokenizer.pad_token, tokenizer.eos_token
    if not pad:
        return lambda text: text
    lead, trail = re.compile(f"^(?:{re.escape(pad)})+"), re.compile(f"(?:{re.escape(pad)})+$")

    def strip(text: str) -> str:
        text = lead.sub("", text)
        stripped = trail.sub("", text)
        return stripped + eos if pad == eos and stripped != text else stripped

    return strip


def template_detector(tokenizer: Any) -> Callable[[str], bool]:
    """Whether a text holds a special token of ``tokenizer`` (``<|im_start|>``, ``<s>``...): then it was
    rendered with a chat template already."""
    specials = {t for t in tokenizer.all_special_tokens if len(t) > 1}
    specials |= {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special and len(t.content) > 1
    }
    specials.discard(tokenizer.unk_token)
    return lambda text: any(t in text for t in specials)


def error(
    status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error reply of every route (module docstring)."""
    kind = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 413: "PayloadTooLarge"}
    body = {
        "message": message,
        "type": kind.get(status, "InvalidRequestError" if status < 500 else "ServiceUnavailable"),
        "code": status,
        "param": field,
    }
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def read_json(request: Request, limit: int) -> Any:
    """The request's body as JSON; :class:`RequestError` when over ``limit`` bytes or not JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body has {declared} bytes; the limit is {limit}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not valid JSON: {e}", status=400) from None


def scoring_route(path: str, parse: Callable[[Any], Call], scorer: Scorer) -> Route:
    """A POST route that scores with protocol ``parse``."""
    limit = int(scorer.config.max_body_mb * (1 << 20))

    async def endpoint(request: Request) -> Response:
        start = time.monotonic()
        response = await _score(request, parse, scorer, limit)
        scorer.telemetry.request(path, response.status_code, time.monotonic() - start)
        return response

    return Route(path, endpoint, methods=["POST"])


async def _score(request: Request, parse: Callable[[Any], Call], scorer: Scorer, limit: int) -> Response:
    if not scorer.authorised(request):
        return error(
            401,
            "this server needs 'Authorization: Bearer <key>' (--api-key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    batcher = scorer.batcher
    try:
        body = await read_json(request, limit)
        if scorer.remote_images is not None:  # before the batcher waits for this request
            body = await asyncio.to_thread(scorer.remote_images.fetched, body)
    except RequestError as e:
        return error(e.status, e.message, field=e.field)
    except ClientDisconnect:  # the client hung up mid-body: counted and said once, not an error of ours
        scorer.telemetry.disconnect()
        log.info("rmkit serve: a client hung up before its %s request was read", request.url.path)
        return Response(status_code=499)
    batcher.arrive()  # from here to submit(), a batch may wait for this request (at most --max-wait-ms)
    queued = False
    try:
        call = parse(body)
        if call.items > scorer.config.max_items:
            raise RequestError(f"{call.items} items; the limit is {scorer.config.max_items} (--max-items)")
        if call.normalize and not scorer.rm.normalizes:
            raise RequestError("normalize: this model stores no score mean and std", field="normalize")
        batch = await scorer.sequences(call)
        future = batcher.submit(batch.ids, arrived=True, positions=batch.positions)
        queued = True
        try:
            scores = await asyncio.wait_for(asyncio.shield(future), scorer.config.request_timeout)
        except asyncio.TimeoutError:
            batcher.cancel(future)
            return error(
                503,
                f"no scores within {scorer.config.request_timeout} s (--request-timeout)",
                headers={"Retry-After": "1"},
            )
        scores, extra = scorer.kind.answer(scorer.rm, scores, scorer.reading)
        if call.normalize or scorer.config.normalize:
            scores = scorer.rm.normalize(scores)
        reply = call.reply(scores, sum(len(r) for r in batch.ids))
        if extra and isinstance(reply, dict) and "scores" in reply:  # rmkit's own reply carries them
            reply.update(extra)
        return JSONResponse(reply)
    except RequestError as e:
        return refused(request.url.path, e)
    except QueueFull as e:
        return error(503, f"busy: {e}", headers={"Retry-After": "1"})
    except Exception as e:
        # the batch failed (out of memory, a model error): this request fails, not the server; its
        # traceback is logged once, under an id the reply names
        request_id = f"{next(_REQUEST_IDS):08x}"
        log.exception("rmkit serve: request %s: scoring failed", request_id)
        return error(500, f"scoring failed (request {request_id}): {type(e).__name__}: {e}")
    finally:
        if not queued:
            batcher.leave()


_REFUSALS_SAID: set[str] = set()


def refused(path: str, e: RequestError) -> Response:
    """The reply to a request refused for its content; each distinct reason is also logged once, because some
    clients (verl's reward loop) show only the status, not the reply's message."""
    if e.message not in _REFUSALS_SAID and len(_REFUSALS_SAID) < 100:
        _REFUSALS_SAID.add(e.message)
        log.warning("rmkit serve: a %s request refused (%d): %s (said once)", path, e.status, e.message)
    return error(e.status, e.message, field=e.field)


COST_PREFIX = "/cost"  # the cost model's routes beside a reward model's (--cost-model)


def create_app(rm: Any, config: ServeConfig, cost: Any = None) -> Starlette:
    """The Starlette app serving ``rm`` with ``config``'s limits, and the cost model ``cost`` (when given)
    on the same routes under ``/cost``, with a batcher of its own; ``app.state.scorer`` holds ``rm``'s state
    (``app.state.cost_scorer`` the cost model's)."""
    scorer = Scorer(rm, config)
    name = scorer.model_name
    routes = [scoring_route(path, parse, scorer) for path, parse in protocols.routes(scorer.context)]
    scorers = [scorer]
    if cost is not None:
        cost_config = replace(
            config, model=config.cost_model or "cost", served_model_name=None, cost_model=None
        )
        scorers.append(Scorer(cost, cost_config))
        routes += [
            scoring_route(COST_PREFIX + path, parse, scorers[1])
            for path, parse in protocols.routes(scorers[1].context)
        ]

    async def health(request: Request) -> Response:
        models = {"cost_model": scorers[1].model_name} if cost is not None else {}
        return JSONResponse({"status": "ok", "model": name, **models})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(
            scorer.telemetry.render(scorer.batcher.queued), media_type="text/plain; version=0.0.4"
        )

    async def models(request: Request) -> Response:
        card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "rmkit"}
        return JSONResponse({"object": "list", "data": [card]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for each in scorers:
            each.batcher.start()
        try:
            yield
        finally:
            for each in scorers:
                await asyncio.to_thread(each.batcher.stop)
                await asyncio.to_thread(each.tokenizing.stop)

    routes += [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.scorer = scorer
    app.state.cost_scorer = scorers[1] if cost is not None else None
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(
        404,
        f"no route {request.url.path}; scoring routes: POST /score, /get_reward, /pooling, /classify, /reward",
    )


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, f"{request.method} is not allowed on {request.url.path}")


def load(config: ServeConfig, device: Any = None) -> Any:
    """Load ``config.model`` by its kind (:mod:`rmkit.kinds`) on ``device`` (by default the one
    ``config.device`` names), compiled with ``compile`` (the batch worker warms it up before the server
    listens); a process RM scores each item's response as a solution, by the aggregate of its steps."""
    device = device or runtime.resolve_device(config.device)
    kind, model = kinds.load(
        config.model, config.loading(), config.step_format(), dtype=config.dtype, device=device
    )
    refused = kind.servable(model)
    if refused:
        raise RMKitError(f"{config.model}: {refused}")
    return kind.compile(model) if config.compile else model


def serve(model: Any, **options: Any) -> Starlette:
    """The server as an ASGI app, to run with any ASGI server or mount in an app of your own::

        app = rmkit.serve("path/to/rm", max_wait_ms=2, api_key="secret")
        uvicorn.run(app, port=8000)

    ``model`` is a checkpoint (loaded as ``rmkit serve`` loads it) or a loaded model of any kind rmkit reads
    (:class:`rmkit.RewardModel`, ...); ``options`` are :class:`ServeConfig`'s fields;
    ``cost_model`` (a checkpoint) is served beside it under ``/cost``.
    """
    if not isinstance(model, (str, Path)):
        name = getattr(model.model.config, "_name_or_path", "") or "rmkit"
        config = ServeConfig(model=name, **options)
        return create_app(model, config, load_cost(config))
    config = ServeConfig(model=str(model), **options)
    return create_app(load(config), config, load_cost(config))


def load_cost(config: ServeConfig, device: Any = None) -> Any:
    """The cost model of ``--cost-model``, loaded as :func:`load` loads a model (``None`` without one)."""
    if config.cost_model is None:
        return None
    return load(replace(config, model=config.cost_model), device)
