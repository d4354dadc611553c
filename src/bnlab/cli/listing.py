"""``bnlab list``: presets, datasets and built-in studies as tables that fit 80 columns.

Shapes are written as bnlab takes them, channels first: ``(C, H, W)`` for images, ``(F,)``
for tabular features. A dataset's ``scale`` is the pixel scale it loads with unless the spec
sets ``scale``: ``raw`` = pixels 0-255, ``unit`` = divided by 255 (``bnlab.data.options``).
The last column of each table wraps; no column is ever cut.
"""

from __future__ import annotations

import importlib

from rich.console import Console
from rich.table import Table

LIST_KINDS = ("presets", "datasets", "studies")

#: ``(input_shape, classes)`` of the named datasets, as they load (checked against the
#: embedded ones by tests/cli). Local formats (``npz:PATH`` ...) take theirs from the files.
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((1, 8, 8), 10),
    "circles": ((2,), 2),
    "moons": ((2,), 2),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


def shape_text(shape: tuple[int, ...] | None) -> str:
    if not shape:
        return "from data"
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def default_scale(name: str) -> str:
    """The dataset's default ``scale`` (``raw``/``unit``), ``-`` for tabular data."""
    registry = importlib.import_module("bnlab.data.registry")
    entry = getattr(registry, "_REGISTRY", {}).get(name.split(":", 1)[0])
    scale = getattr(entry, "default_scale", None)
    return "-" if scale is None else str(scale)


def _table(title: str, heads: list[str]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  padding=(0, 1), header_style="dim")
    for i, head in enumerate(heads):
        last = i == len(heads) - 1
        table.add_column(head, style="bold" if i == 0 else None, no_wrap=not last,
                         overflow="fold", ratio=1 if last else None)
    return table


def presets_table() -> Table:
    from bnlab import models

    table = _table("presets", ["name", "input (C,H,W)", "classes", "description"])
    for name in models.presets():
        options = models.preset_options(name)
        description = models.get(name).description
        table.add_row(name, shape_text(tuple(options.get("input_shape", ()))),
                      str(options.get("num_classes", "")), description)
    return table


def datasets_table() -> Table:
    from bnlab import data

    table = _table("datasets", ["name", "input (C,H,W)", "classes", "scale", "description"])
    for name, description in data.describe().items():
        shape, classes = DATASET_SHAPES.get(name, (None, None))
        table.add_row(name, shape_text(shape), "from data" if classes is None else str(classes),
                      default_scale(name), description)
    return table


def studies_table() -> Table:
    from bnlab.study import builtin_studies

    table = _table("studies", ["name", "question"])
    for name, question in builtin_studies():
        table.add_row(name, question)
    return table


def print_lists(kinds: tuple[str, ...], console: Console) -> None:
    makers = {"presets": presets_table, "datasets": datasets_table, "studies": studies_table}
    for kind in kinds:
        console.print(makers[kind]())
