"""``python -m qtool``: the same as the ``qtool`` command."""

import sys

from .cli.main import main

sys.exit(main())
