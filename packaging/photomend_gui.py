"""PyInstaller entry point of the ``photomend-gui`` windowed executable.

torch is imported before PySide6 on purpose: with recent torch builds on Windows, loading
Qt's DLLs first makes torch's DLL initialisation fail (c10.dll / WinError 1114).
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    import torch  # noqa: F401  (must precede any PySide6 import, see the module docstring)

    from desktop.app import main

    sys.exit(main())
