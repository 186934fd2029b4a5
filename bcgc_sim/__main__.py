"""`python -m bcgc_sim ...`: the `bcgc` command (bcgc_sim.entry.cli)."""

import sys

from .entry.cli import main

sys.exit(main())
