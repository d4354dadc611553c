"""PyTorch front end of bnlab: ``bnlab.torch.BNMonitor(model, val_data)`` for plain loops."""

from bnlab.monitor.torch_monitor import BNMonitor

__all__ = ["BNMonitor"]
