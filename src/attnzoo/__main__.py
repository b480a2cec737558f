"""``python -m attnzoo`` (what ``torchrun -m attnzoo train ...`` runs)."""

import sys

from attnzoo.cli import main

sys.exit(main())
