"""The options of ``rmkit serve`` (:mod:`rmkit.options`), apart from the app, which loads torch: ``rmkit serve
--help`` answers at once."""

from __future__ import annotations

from dataclasses import dataclass

from rmkit.defaults import API_KEY_ENV, MAX_ROWS
from rmkit.options import InferenceOptions, ModelOptions, RuntimeOptions, StepOptions, option


@dataclass(kw_only=True)
class ServeConfig(RuntimeOptions, InferenceOptions, ModelOptions, StepOptions):
    model: str = option(help="reward model checkpoint (directory or hub name)", path="model")
    cost_model: str | None = option(
        None,
        help="a safety cost model served beside --model by the same process, each route under /cost (POST "
        "/cost/score, /cost/get_reward, ...): a PPO-Lagrangian loop reads reward and cost from one server",
        path="model",
    )
    host: str = option("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = option(8000, help="port to listen on (0 picks a free one)")
    batch_tokens: int | None = option(
        None,
        help="real tokens one batch takes from the queue; also the padded size of a forward pass (default: "
        "16384 on the CPU, sized from free memory on a GPU)",
    )
    max_rows: int = option(MAX_ROWS, help="most items in one batch")
    max_wait_ms: float = option(
        5.0,
        help="how long a batch may wait for requests still being read, counted from its oldest item's "
        "arrival (a lone caller never waits)",
    )
    batch_cost: float | None = option(
        None,
        help="fixed cost of one forward pass in tokens' worth of work, which decides when a batch of mixed "
        "lengths is split by length; default: measured at start",
    )
    prefix_sharing: bool = option(
        True,
        help="the items of one request that answer one prompt run after one pass over it (causal models; exact)",
    )
    cross_request_batching: bool = option(
        True, help="batch items of different requests together (off: each request runs alone)"
    )
    max_items: int = option(4096, help="most items one request may carry (more: 422)")
    max_tokens: int | None = option(
        None, help="most tokens per item; default: the model's max length (see --truncation)"
    )
    truncation: str = option(
        "left",
        help="an item over --max-tokens: 'left' keeps its end and cuts the prompt from the left (rmkit's "
        "rule); 'refuse' answers 422",
        choices=["left", "refuse"],
    )
    max_body_mb: float = option(64.0, help="largest request body in MiB (more: 413)")
    allow_remote_images: bool = option(
        False,
        help="fetch the http(s) URLs of image_url parts (off: only data URLs; a URL is refused with 422)",
    )
    remote_image_mb: float = option(10.0, help="largest remote image in MiB (more: 413)")
    remote_image_timeout: float = option(10.0, help="seconds to connect to a remote image and for each read")
    max_queue: int = option(65536, help="most items waiting for a batch; more get 503 with Retry-After")
    request_timeout: float = option(
        120.0, help="seconds a request may wait for its scores before a 503 (its items are dropped)"
    )
    api_key: str | None = option(
        None, help=f"bearer token every scoring route requires (default: ${API_KEY_ENV} when set)"
    )
    served_model_name: str | None = option(
        None, help="model name in vLLM-style replies and GET /v1/models (default: --model)"
    )
    reward_key: str = option(
        "reward", help="key of the reward in POST /reward replies (slime); '' replies a bare number"
    )
    normalize: bool = option(
        False,
        help="standardise every reply's scores with the training-time mean/std (POST /score requests can ask "
        'with "normalize": true)',
    )
    access_log: bool = option(False, help="log every request (costs time under RL load)")
    compile: bool = option(
        False,
        help="torch.compile the model and warm it up before listening (10-30 s at start, faster batches)",
    )
