"""``python -m l7ctl``: the l7ctl command line."""

import sys

from l7ctl.cli import main

sys.exit(main())
