"""PyInstaller's entry script (a script cannot use the package's relative imports, as __main__.py does)."""

import multiprocessing
import sys

from jrft_desktop.gui.app import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen app on Windows/macOS re-runs this executable for child processes
    sys.exit(main())
