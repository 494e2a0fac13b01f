# %% [markdown]
# # RNA + ATAC integration (10x Multiome)
#
# The NeurIPS 2021 bone-marrow Multiome starter: 500 cells with RNA (600 genes) and ATAC
# (600 peaks) measured in the same cells, from 2 batches. We integrate both modalities into
# one embedding, cluster it, predict gene expression from chromatin accessibility alone, and
# look for genes that differ between two cell types.
#
# `python tutorials/02_rna_atac_integration.py [--quick]`; figures go to `tutorials/figures/`.

# %%
import os
import sys
from pathlib import Path

import omnivae
from omnivae import metrics
from omnivae.data.setup import obs_column, refresh

QUICK = "--quick" in sys.argv[1:] or os.environ.get("OMNIVAE_TUTORIAL_QUICK") == "1"
FIGURES = Path(os.environ.get("OMNIVAE_TUTORIAL_FIGURES", Path(__file__).parent / "figures"))

# %% [markdown]
# ## Load and integrate
# ATAC gets a Bernoulli likelihood on binarised peaks by default (a binarised Poisson scaled by
# the cell's number of open peaks), RNA a negative binomial.

# %%
mdata = omnivae.datasets.load("neurips2021_bmmc_multiome_starter")
print(mdata)
model = omnivae.tl.integrate(mdata, batch_key="batch", n_latent=16,
                             max_epochs=5 if QUICK else None, progress_bar=not QUICK,
                             return_model=True)
print(model)
omnivae.pl.history(model, save=FIGURES / "multiome_history.png")

# %% [markdown]
# ## Clusters and UMAP

# %%
labels = obs_column(mdata, "cell_type").astype(str).to_numpy()
agreement = metrics.leiden_agreement(mdata.obsm["X_omnivae"], labels)
print(f"Leiden vs annotated cell types: ARI {agreement['ari']:.3f}, NMI {agreement['nmi']:.3f}")
omnivae.tl.umap(mdata)  # obsm["X_umap"] from obsm["X_omnivae"]
omnivae.pl.latent_umap(mdata, color=["cell_type", "batch"], save=FIGURES / "multiome_umap.png")

# %% [markdown]
# ## Gene expression from chromatin alone
# A copy of the data without RNA: the model embeds the cells from ATAC only and decodes RNA.

# %%
atac_only = mdata.copy()
del atac_only.mod["rna"]  # no cell has RNA now
refresh(atac_only)
omnivae.tl.predict(atac_only, model, target="rna", key_added="rna_from_atac")
r = metrics.mean_feature_pearson(atac_only["rna_from_atac"].X, mdata["rna"].X)
print(f"mean per-gene Pearson r of RNA predicted from ATAC: {r:.3f}")
check = atac_only.copy()
check.mod["rna"] = mdata["rna"]
refresh(check)
omnivae.pl.predicted_vs_observed(check, modality="rna", imputed_key="rna_from_atac",
                                 save=FIGURES / "multiome_rna_from_atac.png")

# %% [markdown]
# ## Differential expression between two cell types

# %%
types = obs_column(mdata, "cell_type").value_counts().index
de = omnivae.tl.differential_expression(mdata, model, groupby="cell_type", group1=types[0],
                                        group2=types[1], modality="rna")
print(de.head(10)[["proba_de", "lfc_mean", "scale1", "scale2", "is_de_fdr"]])
