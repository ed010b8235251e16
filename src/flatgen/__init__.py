"""flatgen: train generative models toward flat minima and measure what flatness buys.

`flatgen.open_model(path)` opens a run or a diffusers model directory; `flatgen.api` holds the
one-call analyses on (model, schedule, data). Both are imported on first use, so `import
flatgen` (and the command line's first answers) stay free of torch.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("open_model", "api"):
        import importlib

        return importlib.import_module(f"flatgen.{name}")  # open_model: a callable module
    raise AttributeError(f"module 'flatgen' has no attribute {name!r}")
