"""``rmkit serve``: score over HTTP, for an RL loop that asks for rewards.

Endpoints (JSON in, JSON out):

- ``POST /score`` with ``{"prompts": [...], "responses": [...]}``, ``{"messages": [[...], ...]}`` or
  ``{"texts": [...]}`` → ``{"scores": [...]}``, one float per item in request order.
- ``POST /get_reward`` with ``{"query": [...]}`` (already rendered texts, as OpenRLHF's remote reward
  model sends them) → ``{"rewards": [...]}``.
- ``GET /health`` → ``{"status": "ok", "model": ...}``.

Add ``"normalize": true`` to a request to standardise scores with the mean/std stored at training time.
The server binds 127.0.0.1 unless told otherwise; one model instance serves all requests, one batch at
a time (each request is batched by length internally).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from rmkit import runtime
from rmkit.errors import RMKitError
from rmkit.inference import BATCH_TOKENS
from rmkit.modeling import RewardModel
from rmkit.options import RuntimeOptions, option
from rmkit.runtime import DTYPES

log = logging.getLogger(__name__)

MAX_BODY = 64 << 20


@dataclass(kw_only=True)
class ServeConfig(RuntimeOptions):
    model: str = option(help="reward model checkpoint (directory or hub name)")
    host: str = option("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = option(8000, help="port to listen on (0 picks a free one)")
    dtype: str = option("fp32", help="weights' dtype", choices=list(DTYPES))
    batch_tokens: int = option(BATCH_TOKENS, help="token budget of one forward batch (rows × padded length)")
    max_items: int = option(4096, help="most items one request may carry")
    trust_remote_code: bool = option(False, help="run custom model code shipped with the checkpoint")
    compile: bool = option(
        False,
        help="torch.compile the model and warm it up before listening (10-30 s at start, faster batches)",
    )


class ScoreServer(ThreadingHTTPServer):
    """An HTTP server around one :class:`RewardModel`; ``serve_forever`` to run, ``shutdown`` to stop."""

    daemon_threads = True

    def __init__(self, rm: RewardModel, config: ServeConfig):
        self.rm, self.config = rm, config
        self.lock = threading.Lock()
        super().__init__((config.host, config.port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def scores_for(self, body: dict[str, Any]) -> list[float]:
        """Scores for one request body; raises :class:`RMKitError` naming the bad field."""
        fields = [k for k in ("prompts", "messages", "texts", "query") if k in body]
        if len(fields) != 1 and set(fields) != {"prompts", "query"}:
            raise RMKitError("send exactly one of 'prompts' with 'responses', 'messages', 'texts' or 'query'")
        if "query" in body:
            kwargs = {"texts": body["query"]}
        elif "prompts" in body:
            kwargs = {"prompts": body["prompts"], "responses": body.get("responses")}
        else:
            kwargs = {fields[0]: body[fields[0]]}
        for name, value in kwargs.items():
            if not isinstance(value, list):
                raise RMKitError(f"field '{name}' must be a list, got {type(value).__name__}")
            if len(value) > self.config.max_items:
                raise RMKitError(
                    f"field '{name}' has {len(value)} items; the limit is {self.config.max_items}"
                )
            bad = next((i for i, v in enumerate(value) if not isinstance(v, (str, list))), None)
            if bad is not None:
                raise RMKitError(f"field '{name}' item {bad}: expected a string or a list of messages")
        with self.lock:
            try:
                return self.rm.score(
                    batch_tokens=self.config.batch_tokens, normalize=bool(body.get("normalize")), **kwargs
                )
            except (KeyError, TypeError) as e:
                raise RMKitError(f"malformed items: {e}") from None


class _Handler(BaseHTTPRequestHandler):
    server: ScoreServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(HTTPStatus.OK, {"status": "ok", "model": self.server.config.model})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}; try POST /score"})

    def do_POST(self) -> None:
        if self.path not in ("/score", "/get_reward"):
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {self.path}; try POST /score"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(body, dict):
                raise RMKitError("the body must be a JSON object")
            scores = self.server.scores_for(body)
        except json.JSONDecodeError as e:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": f"body is not valid JSON: {e}"})
            return
        except RMKitError as e:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        key = "rewards" if self.path == "/get_reward" else "scores"
        self._reply(HTTPStatus.OK, {key: scores})


def make_server(config: ServeConfig, device: torch.device | None = None) -> ScoreServer:
    """Load the model on ``device`` (by default the one ``config.device`` names), compiled and warmed up with
    ``compile``, and bind the server; not serving yet."""
    rm = RewardModel.from_pretrained(
        config.model,
        dtype=config.dtype,
        device=device or runtime.resolve_device(config.device),
        trust_remote_code=config.trust_remote_code,
    )
    if config.compile:
        # Compile before the first request: one graph for batches of any shape, one for a single row.
        rm.compile()
        rm.score(texts=["warm up", "warm up the compiled model"])
        rm.score(texts=["warm up"])
    return ScoreServer(rm, config)


def serve(config: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    with runtime.start(config.device, config.threads) as rt:
        server = make_server(config, rt.device)
        log.info(
            "rmkit serve: %s on %s (POST /score, POST /get_reward, GET /health)", config.model, server.url
        )
        try:
            server.serve_forever()
        finally:
            server.server_close()
