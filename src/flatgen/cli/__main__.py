"""`python -m flatgen.cli` (torchrun launches training this way)."""

import sys

from flatgen.cli import app

sys.exit(app())
