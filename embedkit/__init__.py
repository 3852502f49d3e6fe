"""embedkit: Chinese-first sentence embeddings, reduction, FAISS indexes and search.

Heavy submodules are imported lazily: ``from embedkit import Encoder`` loads torch only then."""

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "embedkit.encoder",
    "EmbedIndex": "embedkit.index",
    "Hit": "embedkit.index",
    "Doc": "embedkit.corpus",
    "make_reducer": "embedkit.reducers",
    "jl_min_dim": "embedkit.reducers",
    "AutoReducer": "embedkit.reducers",
    "Calibrator": "embedkit.calibration",
    "TextNormalizer": "embedkit.textnorm",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedkit' has no attribute {name!r}")
