"""CUDA graphs of a stack's fixed-shape training step, one per batch size.

Capture needs warm-up steps on a side stream; every tensor a step writes is snapshotted
before and restored after them (the ``mutable`` list), so warm-up does not leak into the run.
A failed capture warns once and the stack trains eagerly from then on (graphs are an
optimisation, never a requirement).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


class StepGraphs:
    """``run(idx)``: ``step(idx)`` eagerly, or replayed from the graph of ``idx``'s batch size.

    ``step``: one training step of the stack on a ``(b, K)`` index tensor; ``mutable``: every
    tensor a step writes; ``enabled``: capture at all (``cuda_graphs``).
    """

    def __init__(
        self,
        step: Callable[[torch.Tensor], None],
        mutable: Callable[[], list[torch.Tensor]],
        k: int,
        device: torch.device,
        enabled: bool,
    ):
        self.step, self.mutable, self.k, self.device = step, mutable, k, device
        self._graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        self._failed = not enabled

    def run(self, idx: torch.Tensor) -> None:
        if self._failed:
            self.step(idx)
            return
        size = idx.shape[0]
        if size not in self._graphs:
            try:
                self._graphs[size] = self._capture(size)
            except Exception as error:  # graphs are an optimisation: fall back to eager
                warnings.warn(
                    f"cuda_graphs: capture failed ({type(error).__name__}: {error}); "
                    "training eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._failed = True
                self.step(idx)
                return
        graph, static = self._graphs[size]
        static.copy_(idx, non_blocking=True)
        graph.replay()

    def _capture(self, size: int):
        """A CUDA graph of one step of ``size`` samples per run (state restored after the
        warm-up steps that capture requires)."""
        static = torch.zeros((size, self.k), dtype=torch.long, device=self.device)
        saved = [t.clone() for t in self.mutable()]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.step(static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(static)
        for t, copy in zip(self.mutable(), saved, strict=True):
            t.copy_(copy)
        return graph, static
