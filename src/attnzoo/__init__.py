"""attnzoo: visual attention mechanisms for convolutional networks."""

from attnzoo.attach import attach
from attnzoo.layers import collect_maps, record_maps, recording_maps
from attnzoo.registry import Divergence, ModuleInfo, create, list_modules, module_info

__version__ = "0.1.0"

# Submodules load on first attribute access (``attnzoo.models``, ``attnzoo.gattanet`` ...), so
# ``import attnzoo`` stays light and never imports optional dependencies.
_SUBMODULES = {
    "models",
    "gattanet",
    "supervision",
    "metrics",
    "data",
    "train",
    "bench",
    "viz",
    "layers",
    "registry",
    "modules",
    "robustness",
}


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"attnzoo.{name}")
    raise AttributeError(f"module 'attnzoo' has no attribute {name!r}")


__all__ = [
    "Divergence",
    "ModuleInfo",
    "__version__",
    "attach",
    "collect_maps",
    "create",
    "list_modules",
    "module_info",
    "record_maps",
    "recording_maps",
]
