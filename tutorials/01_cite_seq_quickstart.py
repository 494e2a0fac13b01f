# %% [markdown]
# # CITE-seq integration and protein prediction with omnivae
#
# From an `.h5mu` file to a joint embedding, clusters, a UMAP and imputed proteins, on the
# NeurIPS 2021 bone-marrow CITE-seq starter (600 cells, 1000 genes, 134 proteins, 2 donors).
#
# Run it as a script (`python tutorials/01_cite_seq_quickstart.py`) or open it as a notebook
# with jupytext. `OMNIVAE_TUTORIAL_QUICK=1` trains for a few epochs only (used by the tests).
# Figures are written to `tutorials/figures/`.

# %%
import os
from pathlib import Path

import numpy as np

import omnivae
from omnivae import metrics
from omnivae.data import obs_column
from omnivae.report import plot_umap, umap_coordinates
from omnivae.splits import withhold_modality

QUICK = os.environ.get("OMNIVAE_TUTORIAL_QUICK") == "1"
FIGURES = Path(os.environ.get("OMNIVAE_TUTORIAL_FIGURES", Path(__file__).parent / "figures"))

# %% [markdown]
# ## Load the data
# `load` finds the file in `$OMNIVAE_DATA`, `../shared/data` or the user cache, and checks its
# checksum. Raw counts are in `X` of each modality.

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
# Defaults: NB likelihood for RNA, a background/foreground NB mixture for protein, a mixture of
# products of experts (`mopoe`) to fuse the two, batch-conditioned decoders.

# %%
model = omnivae.Model(masked, batch_key="batch")
print(model)
model.train(max_epochs=5 if QUICK else None, progress_bar=not QUICK)
print(model.history[["train_elbo", "validation_elbo"]].tail())

# %% [markdown]
# ## Joint embedding, clusters, UMAP

# %%
masked.obsm["X_omnivae"] = model.get_latent_representation()
labels = obs_column(masked, "cell_type").astype(str).to_numpy()
agreement = metrics.leiden_agreement(masked.obsm["X_omnivae"], labels)
print(f"Leiden vs annotated cell types: ARI {agreement['ari']:.3f}, NMI {agreement['nmi']:.3f}")
coords = umap_coordinates(masked.obsm["X_omnivae"])
plot_umap(coords, {"cell type": labels, "batch": obs_column(masked, "batch")},
          FIGURES / "cite_umap.png", title="omnivae joint embedding, NeurIPS CITE starter")

# %% [markdown]
# ## Predict protein for the cells that lack it
# `tl.impute` adds a modality `adt_imputed` covering every cell, with the posterior standard
# deviation in `layers["std"]`.

# %%
omnivae.tl.impute(masked, model, target="adt", n_samples=20)
rows = masked.obs_names.get_indexer(withheld.obs_names)
predicted = masked["adt_imputed"].X[rows]
print(f"mean per-protein Pearson r on withheld cells: "
      f"{metrics.mean_feature_pearson(predicted, withheld.X):.3f}")
uncertainty = masked["adt_imputed"].layers["std"][rows].mean()
print(f"mean posterior std of the predicted proportions: {uncertainty:.2e}")
assert np.isfinite(predicted).all()
