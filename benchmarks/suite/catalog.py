"""Every system the suite can run, by name: omnivae's rows, the scvi-tools peers
(:mod:`suite.peers`) and the baselines (:mod:`suite.systems`). Kept apart from both so that
neither imports the other in a cycle."""

from __future__ import annotations

from .peers import MultiVI, TotalVI
from .systems import (
    FAMILY_ROWS,
    OMNIVAE_ROWS,
    PCARNA,
    VARIANT_ROWS,
    FeatureMean,
    KNNRegression,
    Omnivae,
    PCAConcat,
    RandomEmbedding,
    System,
)


def all_systems(names: list[str] | None = None) -> list[System]:
    """Every system (or those named), omnivae rows first, then peers, then baselines."""
    systems: list[System] = [Omnivae(n, **kw) for n, kw in OMNIVAE_ROWS.items()]
    if names:  # the named family / variant rows sit with omnivae's own
        systems += [Omnivae(n, **kw) for n, kw in {**FAMILY_ROWS, **VARIANT_ROWS}.items()
                    if n in names]
    systems += [TotalVI(), MultiVI(), PCAConcat(), PCARNA(), RandomEmbedding(), KNNRegression(),
                FeatureMean()]
    if names:
        unknown = set(names) - {s.name for s in systems}
        if unknown:
            raise SystemExit(f"Unknown systems {sorted(unknown)}; choose from "
                             f"{[s.name for s in systems]}.")
        systems = [s for s in systems if s.name in names]
    return systems
