"""python -m fesnet.realtime: the fesnet-spot CLI."""

import sys

from .cli import main

sys.exit(main())
