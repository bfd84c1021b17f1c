"""``python -m webrtclab``."""

import sys

from .cli import main

sys.exit(main())
