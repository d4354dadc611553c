"""Keras 3 front end of bnlab: ``bnlab.keras.BNMonitor(validation_data=...)``, a ``fit`` callback.

Importing this module imports Keras (torch backend); ``import bnlab`` alone never does.
"""

from bnlab.monitor.keras_callback import BNMonitor

__all__ = ["BNMonitor"]
