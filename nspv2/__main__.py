"""Entry point of ``python -m nspv2``."""

import sys

from .tools.cli import main

sys.exit(main())
