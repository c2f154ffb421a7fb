"""PhotoMend engine: everything that computes. Never imports Qt.

The public API used by the CLI and the desktop app lives in :mod:`engine.jobs.api`.
"""

__version__ = "0.1.0"
