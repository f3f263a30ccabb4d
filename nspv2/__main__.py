"""Entry point of ``python -m nspv2``."""

import sys

from .cli import main

sys.exit(main())
