"""Watch BN while the user trains: the same findings as the doctor, epoch by epoch.

Front ends: :class:`bnlab.keras.BNMonitor` (a Keras 3 callback), :class:`bnlab.torch.BNMonitor`
(plain PyTorch loops) and :class:`bnlab.lightning.BNMonitor` (a Lightning callback). They share
:class:`~bnlab.monitor.core.Watcher` (samples, table, warnings), the measurement
(:mod:`bnlab.monitor.measure`) and the judgement (:mod:`bnlab.monitor.judge`), which takes its
ids, thresholds and words from :mod:`bnlab.doctor.rules`, as the doctor does.
"""

from bnlab.monitor.core import Watcher

__all__ = ["Watcher"]
