"""Growing a study in place: which spec changes leave the stored runs' meaning intact.

A stored run is the pair (variant, seed) trained under the variant's *definition*: its model
(preset and options), its data (dataset name and loader options) and its training options.
Changing the spec keeps every stored run when, for each of them, the new spec still has the
variant with the same definition and still lists the seed. So these grow a study in place:

* more seeds (``seeds = 5`` -> ``seeds = 10``), or more variants;
* a reworded ``question``, another ``data.hint``, ``target_accuracy`` or ``baseline``
  (they change what the summary says, which is recomputed from the stored runs).

These change what a stored run means and need ``--new`` (a new version of the study):
a changed model, data or training option of a variant that has stored runs, a removed variant
or seed that has stored runs. :func:`run_changes` lists them in the spec's own words
(``train.epochs 10 -> 20 (every variant)``, ``variants.bn removed``), and the store puts that
list into its refusal.
"""

from __future__ import annotations

from typing import Any

from bnlab.errors import BnlabError
from bnlab.study.spec import StudySpec, Variant, load_spec
from bnlab.study.store import describe_changes


def definition(variant: Variant) -> dict[str, Any]:
    """What a run of ``variant`` is, whatever its seed: model, data and training options."""
    return {
        "model": {"preset": variant.preset, **variant.model_options},
        "data": {"name": variant.data_name, **variant.data_options},
        "train": variant.train.fit_options(),
    }


def run_changes(
    new: StudySpec, old_spec: dict[str, Any], stored: set[tuple[str, int]]
) -> list[str]:
    """The changes from ``old_spec`` to ``new`` that alter a stored ``(variant, seed)`` run.

    An empty list: every stored run means in ``new`` what it meant before (the study may grow
    in place). ``old_spec`` is the stored spec dict (as :meth:`StudySpec.to_dict` wrote it).
    """
    try:
        old = load_spec(old_spec, check_values=False)
    except BnlabError as error:
        return [f"the stored spec no longer reads ({error})"]
    old_defs = {v.name: definition(v) for v in old.expand()}
    new_defs = {v.name: definition(v) for v in new.expand()}
    stored_variants = list(dict.fromkeys(v for v, _ in sorted(stored)))
    out: list[str] = []
    by_change: dict[str, list[str]] = {}
    for name in stored_variants:
        if name not in new_defs:
            out.append(f"variants.{name} removed")
            continue
        if name not in old_defs:  # a run the old spec did not list: nothing to compare
            continue
        for change in describe_changes(old_defs[name], new_defs[name]):
            by_change.setdefault(change, []).append(name)
    for change, names in by_change.items():
        every = len(names) == len(stored_variants) and len(names) > 1
        which = "every variant" if every else "variant " + ", ".join(names)
        out.append(f"{change} ({which})")
    removed = sorted({s for v, s in stored if v in new_defs} - set(new.seeds))
    if removed:
        out.append(f"seeds {', '.join(map(str, removed))} removed")
    return out


__all__ = ["definition", "run_changes"]
