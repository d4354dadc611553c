"""PyTorch Lightning front end of bnlab: ``bnlab.lightning.BNMonitor()``, a callback.

Importing this module imports Lightning (``pip install bnlab[lightning]``); ``import bnlab``
alone never does.
"""

try:
    import lightning.pytorch  # noqa: F401
except ImportError as exc:  # the lightning extra is optional
    raise ImportError("bnlab.lightning needs Lightning: pip install 'bnlab[lightning]'") from exc

from bnlab.monitor.lightning_callback import BNMonitor  # noqa: E402

__all__ = ["BNMonitor"]
