"""``python -m infra up|down|status|env``: see :mod:`infra.cli`."""

import sys

from infra.cli import main

sys.exit(main())
