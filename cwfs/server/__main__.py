"""``python -m cwfs.server``."""

import sys

from .cli import main

sys.exit(main())
