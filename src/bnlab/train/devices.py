"""Where a run trains: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``."""

from __future__ import annotations

import torch

from bnlab.errors import ConfigError
from bnlab.train.options import check_option


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device`` -> a device."""
    check_option("device", device)
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {str(device)!r} is not available (no CUDA device); use 'cpu'",
            param="device",
            value=device,
            allowed="'cpu' (no CUDA device)",
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError.invalid("device", str(device), "one of 'cpu', 'cuda', 'auto'")
    return resolved
