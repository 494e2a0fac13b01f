"""scvi-tools peers behind the same interface, at their documented defaults.

- TOTALVI (RNA + protein). Cells without protein in a batch that has protein (the withheld
  cells of the prediction task) are not in the reference: they are mapped as a query with zero
  protein (``load_query_data``, as in scvi-tools' scArches tutorial: ``freeze_expression``,
  200 query epochs, no weight decay) and their protein is read from the query model
  (``get_normalized_expression``, 25 samples, averaged over the reference batches).
  Whole batches without protein (a mosaic's RNA-only donor) are TOTALVI's native missing-protein
  case. TOTALVI cannot embed cells without RNA.
- MULTIVI (RNA + ATAC), mosaic training: a MuData whose RNA and ATAC cover every cell, zeros
  where a cell lacks a modality (MULTIVI's own missing-modality convention, as in its tutorial); prediction decodes the missing
  modality of those cells.
"""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .systems import System, modality_rows

QUERY_EPOCHS = 200


def _scvi():
    import scvi

    logging.getLogger("scvi").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="scvi")
    return scvi


def _batches(mdata, spec, cells: pd.Index) -> np.ndarray:
    if spec.batch_key is None:
        return np.full(len(cells), "all", dtype=object)
    return mdata.obs.loc[cells, spec.batch_key].astype(str).to_numpy()


def _on_rows(mdata, modality: str) -> sp.csr_matrix:
    """``mdata[modality].X`` placed on the rows of ``mdata.obs_names`` (zeros where absent)."""
    x = sp.csr_matrix(mdata[modality].X)
    rows = modality_rows(mdata, modality)
    place = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))),
                          shape=(mdata.n_obs, len(rows)))
    return sp.csr_matrix(place @ x, dtype=np.float32)


def _trainer_kwargs(accelerator: str) -> dict:
    return {"accelerator": accelerator, "enable_progress_bar": False,
            "enable_model_summary": False}


def _scvi_epochs(model) -> int | None:
    """Epochs an scvi-tools model trained (its history has one ``elbo_train`` row per epoch)."""
    history = getattr(model, "history", None) or {}
    return len(history["elbo_train"]) if "elbo_train" in history else None


class TotalVI(System):
    name = "TOTALVI (scvi-tools)"
    needs_epochs = True

    def supports(self, modalities):
        return modalities == {"rna", "adt"}

    def _anndata(self, cells: pd.Index, batches: np.ndarray) -> ad.AnnData:
        rna, adt = self.mdata["rna"], self.mdata["adt"]
        protein = np.zeros((len(cells), adt.n_vars), dtype=np.float32)
        has = cells.isin(adt.obs_names)
        protein[has] = adt[cells[has]].X.toarray()
        adata = ad.AnnData(sp.csr_matrix(rna[cells].X), obs=pd.DataFrame(
            {"batch": pd.Categorical(batches)}, index=cells), var=pd.DataFrame(index=rna.var_names))
        adata.obsm["protein_expression"] = pd.DataFrame(protein, index=cells,
                                                        columns=adt.var_names)
        return adata

    def fit(self, mdata, spec, *, seed, max_epochs=None, accelerator="cpu"):
        self.prepare(mdata, spec, seed=seed)
        self.accelerator, self.max_epochs = accelerator, max_epochs
        self.model.train(max_epochs=max_epochs, **_trainer_kwargs(accelerator))

    def prepare(self, mdata, spec, *, seed, **model_kwargs):
        """Set up the reference AnnData and the untrained model (``model_kwargs`` to TOTALVI)."""
        super().fit(mdata, spec, seed=seed)
        scvi = _scvi()
        scvi.settings.seed = seed
        cells = mdata["rna"].obs_names
        batches = _batches(mdata, spec, cells)
        has_adt = cells.isin(mdata["adt"].obs_names)
        query = ~has_adt & np.isin(batches, batches[has_adt])
        self.reference = cells[~query]
        adata = self._anndata(self.reference, batches[~query])
        scvi.model.TOTALVI.setup_anndata(adata, batch_key="batch",
                                         protein_expression_obsm_key="protein_expression")
        self.model = scvi.model.TOTALVI(adata, **model_kwargs)

    def epochs_trained(self):
        return _scvi_epochs(self.model)

    def embed(self):
        out = np.full((self.mdata.n_obs, self.model.module.n_latent), np.nan)
        out[self.mdata.obs_names.get_indexer(self.reference)] = (
            self.model.get_latent_representation())
        return out

    def predict(self, task, cells):
        if task.target != "adt":
            raise NotImplementedError("TOTALVI predicts protein only")
        scvi = _scvi()
        query = self._anndata(cells, np.array(
            ["query " + b for b in _batches(self.mdata, self.spec, cells)], dtype=object))
        query.obsm["protein_expression"][:] = 0.0
        reference_batches = list(self.model.adata.obs["batch"].cat.categories)
        model = scvi.model.TOTALVI.load_query_data(query, self.model, freeze_expression=True)
        model.train(max_epochs=self.max_epochs or QUERY_EPOCHS,
                    plan_kwargs={"weight_decay": 0.0}, **_trainer_kwargs(self.accelerator))
        _, protein = model.get_normalized_expression(
            query, n_samples=25, return_mean=True, transform_batch=reference_batches)
        return np.asarray(pd.DataFrame(protein)[list(self.mdata["adt"].var_names)])


class MultiVI(System):
    name = "MULTIVI (scvi-tools)"
    needs_epochs = True

    def supports(self, modalities):
        return modalities == {"rna", "atac"}

    def fit(self, mdata, spec, *, seed, max_epochs=None, accelerator="cpu"):
        self.prepare(mdata, spec, seed=seed)
        kwargs = {} if max_epochs is None else {"max_epochs": max_epochs}
        self.model.train(**kwargs, **_trainer_kwargs(accelerator))

    def prepare(self, mdata, spec, *, seed, **model_kwargs):
        """Set up the mosaic MuData and the untrained model (``model_kwargs`` to MULTIVI)."""
        super().fit(mdata, spec, seed=seed)
        scvi = _scvi()
        scvi.settings.seed = seed
        obs = pd.DataFrame({"batch": pd.Categorical(_batches(mdata, spec, mdata.obs_names))},
                           index=mdata.obs_names)
        self.adata = md.MuData({
            m: ad.AnnData(_on_rows(mdata, m), obs=obs.copy(), var=pd.DataFrame(index=mdata[m].var_names))
            for m in ("rna", "atac")})
        scvi.model.MULTIVI.setup_mudata(
            self.adata, batch_key="batch",
            modalities={"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"})
        self.model = scvi.model.MULTIVI(self.adata, n_genes=mdata["rna"].n_vars,
                                        n_regions=mdata["atac"].n_vars, **model_kwargs)

    def epochs_trained(self):
        return _scvi_epochs(self.model)

    def embed(self):
        return self.model.get_latent_representation()

    def predict(self, task, cells):
        indices = self.mdata.obs_names.get_indexer(cells)
        if task.target == "atac":
            out = self.model.get_normalized_accessibility(indices=indices, return_numpy=True)
        else:
            out = self.model.get_normalized_expression(indices=indices, return_numpy=True)
        return np.asarray(out.toarray() if sp.issparse(out) else out)
