"""Fill the features a query did not measure (a smaller antibody panel), pure torch + numpy.

The encoders read every feature of a modality, so a query cell that measured only some of
them needs the rest filled before it can be encoded. The fill is the model's expectation for
the cell, ``library_full * p(z)``, with ``p`` the decoded profile (proportions) and the
library renormalised to the full panel, ``library_full = library_measured / Σ_measured p(z)``.

Which ``z``: the latent that best explains what the cell *did* measure (a MAP estimate),

    z* = argmax_z  log p(z) + Σ_m log p(x_m[measured] | z, library_m)

over the modalities ``m`` the cell has (a partially measured one at its renormalised library),
found by ``steps`` Adam steps from the encoder's latent of a first fill. The first fill
predicts the unmeasured features from the cell's other modalities when it has any, and
otherwise uses the reference's average profile (decoded from prior draws) - never zeros, which
the encoder reads as "not expressed".

Why not re-encode the filled panel until it stops changing: that loop drifts (from a
zero-filled panel it can settle on a fixed point of encode -> decode -> fill), and the MAP
latent does not; measured in ``docs/design_evidence.md#query-fill``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from omnivae.data.cells import CellData
from omnivae.module.records import BatchData
from omnivae.module.vae import MultimodalVAE

LEARNING_RATE = 0.05


def fill_unmeasured(
    module: MultimodalVAE, data: CellData, measured: dict[str, np.ndarray], steps: int,
    batch_size: int = 1024,
) -> CellData:
    """Fill the features each partially measured modality lacks (see the module docstring).

    ``data`` may be filled already: measured features are never changed and the measured
    library is recomputed from them, so filling twice (before and after query training) is
    safe. ``steps=0`` zero-fills (for comparison). Returns a new :class:`CellData`.

    Examples
    --------
    >>> import numpy as np, omnivae
    >>> from omnivae.data import setup_mudata
    >>> sim = omnivae.datasets.simulate(40, modalities=("rna", "adt"), missing_fraction=0, seed=0)
    >>> model = omnivae.Model(sim, n_latent=3)
    >>> data, _ = setup_mudata(sim)
    >>> measured = {"rna": np.ones(sim["rna"].n_vars, bool), "adt": np.arange(sim["adt"].n_vars) % 2 == 0}
    >>> filled = fill_unmeasured(model.module, data, measured, steps=5)
    >>> bool((filled.counts["adt"].toarray()[:, ~measured["adt"]] > 0).all())
    True
    """
    missing = {m: ~v for m, v in measured.items() if not v.all()}
    if not missing:
        return data
    counts = {m: data.counts[m].toarray() if m in missing else data.counts[m]
              for m in data.modalities}
    library = {m: v.copy() for m, v in data.library.items()}
    for name, lacking in missing.items():  # the measured features only, for the likelihood
        counts[name][:, lacking] = 0.0
        col = data.modalities.index(name)
        measured_library = _library(counts[name], module.decoder(name).likelihood)
        library[name] = np.where(data.mask[:, col], np.maximum(measured_library, 1.0),
                                 1.0).astype(np.float32)
    if steps > 0:
        module.eval()
        average = {name: _average_profile(module, name) for name in missing}
        for start in range(0, data.n_cells, batch_size):
            rows = np.arange(start, min(start + batch_size, data.n_cells))
            _fill_rows(module, data, rows, counts, library, missing, average, steps)
    return CellData(data.modalities,
                    {m: sp.csr_matrix(counts[m], dtype=np.float32) if m in missing else counts[m]
                     for m in data.modalities},
                    data.mask, data.batch_index, library, data.penalty_codes, data.labels)


def _fill_rows(
    module: MultimodalVAE, data: CellData, rows: np.ndarray, counts: dict, library: dict,
    missing: dict[str, np.ndarray], average: dict[str, Tensor], steps: int,
) -> None:
    """First fill, MAP latent, final fill of the cells ``rows`` (in place)."""
    observed = {name: library[name][rows].copy() for name in missing}
    batch = _batch(data, rows, counts, library, missing)
    with torch.no_grad():
        for name in missing:
            col = data.modalities.index(name)
            others = np.delete(data.mask[rows], col, axis=1).any(axis=1)
            profile = average[name].expand(len(rows), -1)
            if others.any():
                predicted, _ = module.predict_normalized(batch, name)
                profile = torch.where(torch.from_numpy(others)[:, None], predicted, profile)
            _write(counts, library, data, rows, name, missing[name], observed[name], profile,
                   module.decoder(name).likelihood == "bernoulli")
        z = module.posterior(_batch(data, rows, counts, library, missing)).mean
    z = _map_latent(module, batch, z, missing, observed, steps)
    with torch.no_grad():
        for name in missing:
            decoder_in = module.objective.decoder_input(module, batch, z, name, False)
            profile = module.decoder(name).normalized(decoder_in, batch.batch_index)
            _write(counts, library, data, rows, name, missing[name], observed[name], profile,
                   module.decoder(name).likelihood == "bernoulli")


def _map_latent(
    module: MultimodalVAE, batch: BatchData, z: Tensor, missing: dict[str, np.ndarray],
    observed: dict[str, np.ndarray], steps: int,
) -> Tensor:
    """``argmax_z log p(z) + log p(measured counts | z)`` by Adam from ``z`` (per cell)."""
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=LEARNING_RATE)
    names = module.config.names
    keeps = {name: torch.from_numpy(~lacking)[None, :] for name, lacking in missing.items()}
    measured = {name: torch.from_numpy(observed[name])[:, None] for name in missing}
    with torch.enable_grad():
        for _ in range(steps):
            log_lik = module.prior.log_prob(z)
            for m, name in enumerate(names):
                has = batch.mask[:, m]
                if not bool(has.any()):
                    continue
                decoder = module.decoder(name)
                decoder_in = module.objective.decoder_input(module, batch, z, name, False)
                library = batch.library[name]
                keep = torch.ones(library.shape[0], 1, dtype=torch.bool)
                x = batch.counts[name]
                if name in missing:
                    keep = keeps[name]
                    profile = decoder.normalized(decoder_in, batch.batch_index)
                    share = (profile * keep).sum(dim=-1, keepdim=True).clamp(min=1e-3)
                    library = measured[name] / share
                dist = decoder(decoder_in, batch.batch_index, library)
                term = (dist.log_prob(x) * keep).sum(dim=-1)
                log_lik = log_lik + torch.where(has, term, torch.zeros_like(term))
            (grad,) = torch.autograd.grad(-log_lik.sum(), z)
            optimizer.zero_grad()
            z.grad = grad
            optimizer.step()
    return z.detach()


def _write(counts: dict, library: dict, data: CellData, rows: np.ndarray, name: str,
           lacking: np.ndarray, observed: np.ndarray, profile: Tensor, bernoulli: bool) -> None:
    """Fill ``counts[name][rows]``'s unmeasured features from ``profile``; renormalise."""
    p = profile.detach().numpy()
    full = observed / p[:, ~lacking].sum(axis=1).clip(1e-3, 1.0)
    expected = full[:, None] * p[:, lacking]
    if bernoulli:  # the probability of a non-zero
        expected = -np.expm1(-expected)
    has = data.mask[rows, data.modalities.index(name)]
    block = counts[name][rows]
    block[:, lacking] = np.where(has[:, None], expected, 0.0)
    counts[name][rows] = block
    library[name][rows] = np.where(has, full, 1.0).astype(np.float32)


def _batch(data: CellData, rows: np.ndarray, counts: dict, library: dict,
           missing: dict[str, np.ndarray]) -> BatchData:
    """The minibatch of ``rows`` with the current fill: only those rows are converted (a
    :class:`CellData` over every cell would re-sparsify and re-sum the whole query per chunk)."""
    current = {m: sp.csr_matrix(counts[m][rows]) if m in missing else counts[m][rows]
               for m in data.modalities}
    chunk = CellData(data.modalities, current, data.mask[rows], data.batch_index[rows],
                     {m: v[rows] for m, v in library.items()})
    return chunk.batch(np.arange(len(rows)))


def _library(counts: np.ndarray, likelihood: str) -> np.ndarray:
    """Library of the measured features: total counts (non-zeros for Bernoulli)."""
    return np.asarray((counts > 0).sum(axis=1) if likelihood == "bernoulli"
                      else counts.sum(axis=1), dtype=np.float32).ravel()


@torch.no_grad()
def _average_profile(module: MultimodalVAE, name: str, n_draws: int = 1000) -> Tensor:
    """The reference's average profile of ``name``: decoded prior draws, averaged over the
    reference batches (a new batch's decoder entries may be untrained)."""
    generator = torch.Generator().manual_seed(0)
    n_reference = module.config.n_reference_batches or module.config.n_batches
    z = module.prior.sample(n_draws, generator)
    specs = module.config.modalities
    empty = BatchData({s.name: torch.zeros(n_draws, s.n_features) for s in specs},
                      torch.zeros(n_draws, len(specs), dtype=torch.bool),
                      torch.zeros(n_draws, dtype=torch.long),
                      {s.name: torch.ones(n_draws, 1) for s in specs})
    decoder_in = module.objective.decoder_input(module, empty, z, name, False)
    profiles = [module.decoder(name).normalized(decoder_in, torch.full((n_draws,), b))
                for b in range(n_reference)]
    return torch.stack(profiles).mean(dim=(0, 1))[None, :]
