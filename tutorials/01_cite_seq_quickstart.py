# %% [markdown]
# # CITE-seq integration and protein prediction with omnivae
#
# From an `.h5mu` file to a joint embedding, clusters, a UMAP and imputed proteins with
# intervals, on the NeurIPS 2021 bone-marrow CITE-seq starter (600 cells, 1000 genes,
# 134 proteins, 2 donors).
#
# Run it as a script (`python tutorials/01_cite_seq_quickstart.py [--quick]`) or open it as a
# notebook with jupytext. `--quick` (or `OMNIVAE_TUTORIAL_QUICK=1`) trains for a few epochs
# only (used by the tests). Figures are written to `tutorials/figures/`
# (`OMNIVAE_TUTORIAL_FIGURES` overrides).

# %%
import os
import sys
from pathlib import Path

import numpy as np
import scanpy as sc

import omnivae
from omnivae import metrics
from omnivae.data.setup import obs_column
from omnivae.data.splits import withhold_modality

QUICK = "--quick" in sys.argv[1:] or os.environ.get("OMNIVAE_TUTORIAL_QUICK") == "1"
FIGURES = Path(os.environ.get("OMNIVAE_TUTORIAL_FIGURES", Path(__file__).parent / "figures"))

# %% [markdown]
# ## Load the data
# `load` finds the file in `$OMNIVAE_DATA`, `../shared/data` or the user cache, and checks its
# checksum; on a machine without it, it downloads the public source files (sha256-checked) and
# converts them once. Raw counts are in `X` of each modality.

# %%
mdata = omnivae.datasets.load("neurips2021_bmmc_cite_starter")
print(mdata)

# %% [markdown]
# ## Hide protein for a quarter of the cells
# To see how well protein can be predicted from RNA, we remove the protein measurements of 25 %
# of the cells: they stay in the MuData with RNA only. Membership, not zeros, says which cells
# have protein.

# %%
masked, withheld = withhold_modality(mdata, "adt", fraction=0.25, seed=0)
print(f"{masked['adt'].n_obs} cells keep protein, {withheld.n_obs} are RNA-only now")

# %% [markdown]
# ## Train
# `tl.integrate` trains a model (defaults: NB likelihood for RNA and protein, a mixture of
# products of experts to fuse them, batch-conditioned decoders) and writes the joint embedding to `obsm["X_omnivae"]`.

# %%
model = omnivae.tl.integrate(masked, batch_key="batch", max_epochs=5 if QUICK else None,
                             progress_bar=not QUICK, return_model=True)
print(model)
print(model.history[["train_elbo", "validation_elbo"]].tail())
omnivae.pl.history(model, save=FIGURES / "cite_history.png")

# %% [markdown]
# ## Clusters and UMAP
# The embedding is an ordinary `obsm` entry: scanpy's neighbours graph, Leiden and UMAP work on
# it. Plots only draw: `latent_umap` shows `obsm["X_umap"]` (in a notebook each plot is shown
# once; `save=` writes it to a file).

# %%
sc.pp.neighbors(masked, use_rep="X_omnivae")
sc.tl.leiden(masked, key_added="leiden", flavor="igraph", n_iterations=2, directed=False)
sc.tl.umap(masked)  # obsm["X_umap"], from the neighbours graph of the embedding
labels = obs_column(masked, "cell_type").astype(str).to_numpy()
agreement = metrics.leiden_agreement(masked.obsm["X_omnivae"], labels)
print(f"Leiden vs annotated cell types: ARI {agreement['ari']:.3f}, NMI {agreement['nmi']:.3f}")
omnivae.pl.latent_umap(masked, color=["cell_type", "batch", "leiden"],
                       save=FIGURES / "cite_umap.png")

# %% [markdown]
# ## Predict protein for every cell, with 90 % intervals
# `tl.predict` adds a modality `adt_imputed` covering every cell: `X` the predicted
# proportions, `layers["std"]`, `layers["lower"]`/`layers["upper"]` from posterior draws.

# %%
omnivae.tl.predict(masked, model, target="adt", n_samples=10 if QUICK else 100, interval=0.9)
rows = masked.obs_names.get_indexer(withheld.obs_names)
predicted = masked["adt_imputed"].X[rows]
print(f"mean per-protein Pearson r on withheld cells: "
      f"{metrics.mean_feature_pearson(predicted, withheld.X):.3f}")
assert np.isfinite(predicted).all()

# %% [markdown]
# The withheld cells' measured proteins against their predictions (made from RNA alone):

# %%
check = masked.copy()
check.mod["adt"] = withheld  # the truth of the withheld cells, to compare against
omnivae.pl.predicted_vs_observed(check, modality="adt", cells=list(withheld.obs_names),
                                 save=FIGURES / "cite_predicted_vs_observed.png")

# %% [markdown]
# ## Differential expression with the model's uncertainty
# A Bayesian change test between two cell types, on the proteins (measured or imputed, every
# cell counts): `proba_de` is the posterior probability that |log2 fold change| > 0.25.

# %%
types = obs_column(masked, "cell_type").value_counts().index
de = omnivae.tl.differential_expression(masked, model, groupby="cell_type", group1=types[0],
                                        group2=types[1], modality="adt")
print(de.head(10)[["proba_de", "lfc_mean", "lfc_std", "is_de_fdr"]])
