"""What BN folding did, shared by the torch and Keras folders (:mod:`bnlab.nn.fold`,
:mod:`bnlab.nn.fold_keras`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FoldReport:
    """What :func:`fold_bn` did: ``folded`` (BN name, layer it went into), ``left`` (BN, why)."""

    folded: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"folded {bn} into {into}" for bn, into in self.folded]
        return out + [f"left {bn}: {why}" for bn, why in self.left]
