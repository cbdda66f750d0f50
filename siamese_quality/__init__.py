"""siamese_quality: label-free image quality from self-supervised siamese pretext models.

The core modules (distortions, model, training, calibration) import no FiftyOne;
the FiftyOne-facing SDK functions are loaded on first use so that
``import siamese_quality`` stays cheap.
"""

from .core.errors import InvalidOption as InvalidOption  # the SDK's validation error

__version__ = "0.1.0"

PLUGIN_NAME = "@siamese-quality/siamese_quality"

_SDK_NAMES = (
    "assess",
    "train",
    "score",
    "summarize",
    "evaluate",
    "list_models",
    "load_model",
    "delete_model",
    "export_model",
    "import_model",
    "model_info",
    "ModelInfo",
    "changed_since_scoring",
)


def __getattr__(name: str):
    # The SDK imports FiftyOne and torch: load it on first use only
    if name in _SDK_NAMES:
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'siamese_quality' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SDK_NAMES])
