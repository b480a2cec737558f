"""Start-up of the bench's worker processes in the tests (``--jobs``: spawned interpreters).

tests/bench/conftest.py puts this folder on the workers' PYTHONPATH so that they declare the
two torchvision operator schemas (tests/_vision_imports.py) at start-up, as the test process
itself does: pytorch-grad-cam (the baseline's map) then imports in a worker exactly as in the
test process, and a board run by workers equals the same board run in one process. Users'
workers need nothing of this where torchvision matches torch.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/

from _vision_imports import _declare_missing_operators

_declare_missing_operators()
