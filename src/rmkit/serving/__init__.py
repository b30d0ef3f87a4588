"""``rmkit serve``: rewards over HTTP for RL loops, with batching across requests.

- :mod:`.app`: the ASGI app, routes, limits and auth (:func:`serve` returns it);
- :mod:`.protocols`: the request and reply shapes (rmkit's, OpenRLHF's, vLLM's, slime's);
- :mod:`.tokenizing`: the tokenizer thread, batched across requests;
- :mod:`.batcher`: the queue and the one model worker over :mod:`rmkit.inference`;
- :mod:`.telemetry`: the counters of ``GET /metrics``;
- :mod:`.server`: running it (uvicorn);
- :mod:`.client`: :func:`reward_function`, a TRL reward function in-process or over HTTP.
"""

from rmkit.serving.app import ServeConfig, create_app, serve
from rmkit.serving.client import reward_function
from rmkit.serving.server import run, running

__all__ = ["ServeConfig", "create_app", "reward_function", "run", "running", "serve"]
