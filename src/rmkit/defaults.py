"""Names and numbers that the options (``--help``) and the core share, in a module that imports nothing: the
command line reads them without loading torch, and the core takes its defaults from here."""

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # the weights' precisions (rmkit.runtime.DTYPES maps them to torch's)
BATCH_TOKENS = 16384  # padded tokens (rows × longest row) per forward pass on the CPU
MAX_ROWS = 256  # rows per forward pass, whatever their length
CHUNK_ROWS = 2048  # examples tokenised and sorted together
API_KEY_ENV = "RMKIT_API_KEY"  # the environment variable rmkit serve's bearer token may come from
