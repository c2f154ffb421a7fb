"""PyInstaller entry point of the ``photomend`` console executable (the full CLI, training included)."""

import multiprocessing
import sys

if __name__ == "__main__":
    # Frozen programs must call freeze_support() first: spawn-based workers (DataLoader on
    # Windows/macOS) re-launch this executable and would otherwise run the CLI again.
    multiprocessing.freeze_support()
    from engine.cli import main

    sys.exit(main())
