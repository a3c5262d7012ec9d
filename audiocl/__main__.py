"""``python -m audiocl``: the same as the ``audiocl`` command."""

import sys

from audiocl.cli import main

sys.exit(main())
