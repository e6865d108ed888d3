"""`python -m jrft_desktop` opens the desktop app."""

import sys

from .gui.app import main

sys.exit(main())
