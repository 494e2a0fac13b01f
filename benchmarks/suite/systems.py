"""One small interface for every benchmarked system, omnivae's rows and the simple baselines.

A system is fitted on a MuData (``fit``), then gives a joint embedding of every cell
(``embed``; NaN rows for cells it cannot embed) and/or predicts a withheld modality for some
cells (``predict``; rows are scores or normalised expression in the target's feature order).
The scvi-tools peers live in :mod:`suite.peers`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mudata as md
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

import omnivae
from omnivae.metrics import knn_predict, log_normalize, pca_embedding

from .config import DatasetSpec, PredictionTask

N_COMPS = 30
PREDICTION_SAMPLES = 25


class System:
    """Base class: subclasses set ``embeds``/``predicts`` and implement what they support."""

    name: str = "system"
    embeds: ClassVar[bool] = True
    predicts: ClassVar[bool] = True
    needs_epochs: ClassVar[bool] = False  # trains a neural network (quick mode caps its epochs)
    metrics: ClassVar[tuple[str, ...]] = ("pearson", "auroc")  # prediction scores it can get

    def supports(self, modalities: set[str]) -> bool:
        """Whether the system can model a dataset with these modalities."""
        return True

    def accepts(self, mdata: md.MuData, spec: DatasetSpec) -> bool:
        """Whether the system can fit these cells (default: any that it ``supports``)."""
        return True

    def fit(self, mdata: md.MuData, spec: DatasetSpec, *, seed: int,
            max_epochs: int | None = None, accelerator: str = "cpu") -> None:
        self.mdata, self.spec, self.seed = mdata, spec, seed

    def epochs_trained(self) -> int | None:
        """Epochs the last ``fit`` trained (early stopping can end it before the cap); None
        for a system without a neural network."""
        return None

    def embed(self) -> np.ndarray:
        raise NotImplementedError(f"{self.name} does not embed")

    def predict(self, task: PredictionTask, cells: pd.Index) -> np.ndarray:
        raise NotImplementedError(f"{self.name} does not predict")


def modality_rows(mdata: md.MuData, modality: str) -> np.ndarray:
    """Position in ``mdata.obs_names`` of each cell of ``mdata[modality]``."""
    return mdata.obs_names.get_indexer(mdata[modality].obs_names)


class Omnivae(System):
    """``omnivae.Model(**kwargs)`` at its defaults (epochs from the data size, early stopping).

    A row is a name and a dict of ``omnivae.Model`` arguments (see :data:`OMNIVAE_ROWS`);
    ``train_kwargs`` go to ``Model.train`` (for example ``lr``), for tuning the defaults.
    """

    needs_epochs = True

    def __init__(self, name: str, train_kwargs: dict[str, Any] | None = None,
                 **model_kwargs: Any):
        self.name, self.model_kwargs = name, model_kwargs
        self.train_kwargs = dict(train_kwargs or {})

    @property
    def trains_on_complete_cells(self) -> bool:
        """JMVAE and JNF: their joint encoder reads every modality, so they train on the cells
        that have all of them and embed / predict the others through their unimodal encoders."""
        model = self.model_kwargs.get("model")
        return bool(model) and omnivae.module.models.OBJECTIVES[model].needs_complete_cells

    def accepts(self, mdata, spec):
        """A model that trains on the complete cells needs every batch among them (its
        batch-conditioned networks know no other); in the mosaic data the unpaired donors
        are batches of their own, so JMVAE / JNF sit that dataset out."""
        if not self.trains_on_complete_cells or spec.batch_key is None:
            return True
        from omnivae.data.setup import obs_column

        batches = obs_column(mdata, spec.batch_key).astype(str).to_numpy()
        return set(batches) <= set(batches[complete_mask(mdata)])

    def fit(self, mdata, spec, *, seed, max_epochs=None, accelerator="cpu"):
        super().fit(mdata, spec, seed=seed)
        train = complete_cells(mdata) if self.trains_on_complete_cells else mdata
        self.model = omnivae.Model(train, batch_key=spec.batch_key, seed=seed, **self.model_kwargs)
        # the held-out batch probe only logs I(z; batch); switching it off changes no result
        train_kwargs = {**self.train_kwargs,  # a cap (quick mode) wins over a row's epochs
                        "max_epochs": max_epochs or self.train_kwargs.get("max_epochs")}
        self.model.train(accelerator=accelerator, progress_bar=False, batch_probe_every=0,
                         **train_kwargs)

    def epochs_trained(self):
        return len(self.model.history)

    @property
    def _every_cell(self) -> md.MuData | None:
        """The data to embed / predict when the model trained on a subset, else None."""
        return self.mdata if self.trains_on_complete_cells else None

    def embed(self):
        return self.model.get_latent_representation(self._every_cell)

    def predict(self, task, cells):
        # the posterior predictive mean over 25 draws of z, as the TOTALVI adapter asks of
        # TOTALVI (n_samples=25); decoding the posterior mean alone scored lower (tuning.md)
        pred = self.model.predict(task.target, mdata=self._every_cell,
                                  n_samples=PREDICTION_SAMPLES)
        return np.asarray(pred[cells].X)


def complete_mask(mdata: md.MuData) -> np.ndarray:
    """Which cells of ``mdata`` are measured in every modality (MuData membership)."""
    keep = np.ones(mdata.n_obs, dtype=bool)
    for adata in mdata.mod.values():
        keep &= mdata.obs_names.isin(adata.obs_names)
    return keep


def complete_cells(mdata: md.MuData) -> md.MuData:
    """The cells of ``mdata`` measured in every modality, as a copy."""
    keep = complete_mask(mdata)
    if not keep.any():
        raise ValueError("No cell has every modality: a model that needs complete cells "
                         "(JMVAE, JNF) cannot train on this data.")
    return mdata[keep].copy()


class PCAConcat(System):
    """Early integration: PCA of the concatenated log-normalised modalities (0 where missing)."""

    name = "PCA (concatenated)"
    predicts = False

    def embed(self):
        blocks = []
        for modality in self.mdata.mod:
            block = np.zeros((self.mdata.n_obs, self.mdata[modality].n_vars), dtype=np.float32)
            block[modality_rows(self.mdata, modality)] = log_normalize(self.mdata[modality].X)
            blocks.append(block)
        x = np.concatenate(blocks, axis=1)
        n = min(N_COMPS, x.shape[0] - 1, x.shape[1] - 1)
        return PCA(n, random_state=self.seed).fit_transform(x)


class PCARNA(System):
    """PCA of log-normalised RNA alone (NaN for cells without RNA)."""

    name = "PCA (RNA)"
    predicts = False

    def supports(self, modalities):
        return "rna" in modalities

    def embed(self):
        out = np.full((self.mdata.n_obs, N_COMPS), np.nan)
        emb = pca_embedding(self.mdata["rna"].X, N_COMPS, seed=self.seed)
        out[modality_rows(self.mdata, "rna"), : emb.shape[1]] = emb
        return out


class RandomEmbedding(System):
    """Control: standard normal noise, the floor every real embedding must clear."""

    name = "random (control)"
    predicts = False

    def embed(self):
        return np.random.default_rng(self.seed).normal(size=(self.mdata.n_obs, N_COMPS))


class KNNRegression(System):
    """kNN regression on the PCA of the source modality (average of 15 neighbours' profiles)."""

    name = "kNN regression"
    embeds = False

    def predict(self, task, cells):
        source = self.mdata[task.source]
        inputs = pca_embedding(source.X, N_COMPS, seed=self.seed)
        train = source.obs_names.isin(self.mdata[task.target].obs_names)
        train_names = source.obs_names[train]
        query = source.obs_names.get_indexer(cells)
        targets = self.mdata[task.target][train_names].X
        return knn_predict(inputs[train], targets, inputs[query])


class FeatureMean(System):
    """Per-feature mean of the normalised target over the training cells (same for every cell).

    Scored by AUROC only: a prediction constant over cells has no Pearson r over cells.
    """

    name = "per-feature mean"
    embeds = False
    metrics = ("auroc",)

    def predict(self, task, cells):
        counts = np.asarray(self.mdata[task.target].X.toarray(), dtype=np.float64)
        total = counts.sum(1, keepdims=True)
        profile = (counts / np.where(total > 0, total, 1.0))[total[:, 0] > 0].mean(0)
        return np.tile(profile, (len(cells), 1))


# omnivae rows: name -> omnivae.Model arguments. Another model or fusion is one more line.
OMNIVAE_ROWS: dict[str, dict[str, Any]] = {
    "omnivae (poe)": {"fusion": "poe"},
    "omnivae (moe)": {"fusion": "moe"},
    "omnivae (mopoe, default)": {"fusion": "mopoe"},
}

# The rest of the named model family (omnivae.module.models), selectable by name with --systems,
# e.g. ``--systems "omnivae (mvae)" "omnivae (early)"``; not in the default list, which keeps
# the quick mode that CI runs short. JMVAE and JNF train on the cells with every modality
# (their joint encoder refuses the others) and embed / predict the rest.
FAMILY_ROWS: dict[str, dict[str, Any]] = {
    f"omnivae ({name})": {"model": name}
    for name in ("mvae", "mmvae", "mvtcae", "mmvae+", "jmvae", "dmvae", "crmvae", "telbo",
                 "jnf", "nexus", "mhvae", "cmvae", "early")
}


# Settings under consideration for the defaults, selectable by name like the family rows:
# the batch-MI penalty at the weight the issue-3 curve (batch_penalty_curve.md) chose.
VARIANT_ROWS: dict[str, dict[str, Any]] = {
    "omnivae (mopoe + mmd 100)": {"fusion": "mopoe", "batch_penalty": "mmd",
                                  "penalty_weight": 100.0},
    "omnivae (mopoe + hsic 100)": {"fusion": "mopoe", "batch_penalty": "hsic",
                                   "penalty_weight": 100.0},
    # proteins as totalVI's background/foreground mixture, the default before the plain NB
    # (tuning.md, mosaic_gap.md)
    "omnivae (mopoe, adt nb_mixture)": {"fusion": "mopoe", "likelihoods": {"adt": "nb_mixture"}},
    # one mixture component per cell instead of every one (1.4-2x the throughput, speed.md)
    "omnivae (mopoe, one component)": {"fusion": "mopoe", "mixture_sampling": "one"},
    # every epoch of a capped run, still keeping the weights of the best validation ELBO
    # (the default stopped two Multiome seeds early at 100 epochs, family_embedding.md)
    "omnivae (mopoe, no early stopping)": {"fusion": "mopoe",
                                           "train_kwargs": {"early_stopping": False}},
}
