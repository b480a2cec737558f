"""attnzoo: visual attention mechanisms for convolutional networks."""

from attnzoo.layers import collect_maps, record_maps, recording_maps
from attnzoo.registry import Divergence, ModuleInfo, create, list_modules, module_info

__version__ = "0.1.0"

__all__ = [
    "Divergence",
    "ModuleInfo",
    "__version__",
    "collect_maps",
    "create",
    "list_modules",
    "module_info",
    "record_maps",
    "recording_maps",
]
