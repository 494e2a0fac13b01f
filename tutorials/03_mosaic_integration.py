# %% [markdown]
# # Mosaic integration and reference mapping
#
# `quickstart_pbmc_mosaic`: CITE-seq PBMC from 4 donors laid out as a mosaic: donor `p1_0`
# has RNA only, `p2_0` protein only, `p3_0` and `p4_0` both. omnivae trains on all of it at
# once (which cell has which modality comes from MuData membership), predicts protein for the
# RNA-only donor, and maps a new donor onto the trained model without retraining it.
#
# `python tutorials/03_mosaic_integration.py [--quick]`; figures go to `tutorials/figures/`.

# %%
import os
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

import omnivae
from omnivae.data.setup import obs_column, refresh

QUICK = "--quick" in sys.argv[1:] or os.environ.get("OMNIVAE_TUTORIAL_QUICK") == "1"
FIGURES = Path(os.environ.get("OMNIVAE_TUTORIAL_FIGURES", Path(__file__).parent / "figures"))

# %% [markdown]
# ## Hold one paired donor out as a future query

# %%
mdata = omnivae.datasets.load("quickstart_pbmc_mosaic")
query = mdata[mdata.obs["batch"] == "p4_0"].copy()
reference = mdata[mdata.obs["batch"] != "p4_0"].copy()
for name in list(reference.mod):
    reference.mod[name] = reference[name][reference[name].obs["batch"] != "p4_0"].copy()
refresh(reference)
for donor in sorted(set(reference.obs["batch"])):
    cells = reference.obs_names[reference.obs["batch"] == donor]
    has = [m for m in reference.mod if reference[m].obs_names.isin(cells).any()]
    print(f"{donor}: {len(cells)} cells with {' + '.join(has)}")

# %% [markdown]
# ## Integrate the mosaic

# %%
model = omnivae.tl.integrate(reference, batch_key="batch", n_latent=16,
                             max_epochs=5 if QUICK else None, progress_bar=not QUICK,
                             return_model=True)
omnivae.tl.umap(reference)  # obsm["X_umap"] from obsm["X_omnivae"]
omnivae.pl.latent_umap(reference, color=["celltype", "batch"], save=FIGURES / "mosaic_umap.png")

# %% [markdown]
# ## Protein for the RNA-only donor
# Every cell gets a prediction; `obs["observed"]` says which cells measured protein.

# %%
omnivae.tl.predict(reference, model, target="adt", n_samples=20)
imputed = reference["adt_imputed"]
print(imputed.obs["observed"].value_counts())

# %% [markdown]
# ## Map a new donor onto the trained model
# `map_query` keeps every reference weight frozen and fits only parameters for the new batch
# (its decoder batch columns and an encoder input offset). Query cells land in the reference's
# space: a nearest-neighbour classifier trained on reference labels transfers them.

# %%
query_model = model.map_query(query, max_epochs=5 if QUICK else 100, progress_bar=not QUICK)
query.obsm["X_omnivae"] = query_model.get_latent_representation()
knn = KNeighborsClassifier(15).fit(reference.obsm["X_omnivae"],
                                   obs_column(reference, "celltype").astype(str))
truth = obs_column(query, "celltype").astype(str).to_numpy()
accuracy = float(np.mean(knn.predict(query.obsm["X_omnivae"]) == truth))
chance = max(float(np.mean(truth == c)) for c in set(truth))
print(f"label transfer accuracy on the new donor: {accuracy:.3f} (chance {chance:.3f})")

# %% [markdown]
# An RNA-only version of the query maps too; its protein is then predicted from RNA:

# %%
rna_only = query.copy()
del rna_only.mod["adt"]
refresh(rna_only)
rna_query = model.map_query(rna_only, max_epochs=5 if QUICK else 100, progress_bar=not QUICK)
omnivae.tl.predict(rna_only, rna_query, target="adt")
print(rna_only)

# %% [markdown]
# So does a protein-only query that measured just a quarter of the antibody panel. The
# antibodies it lacks are filled with the model's expectation, decoded from the latent that
# best explains the ones it measured (`omnivae.model.mapping.fill`), so the encoder never reads them as
# "not expressed":

# %%
small_panel = query.copy()
del small_panel.mod["rna"]
small_panel.mod["adt"] = small_panel["adt"][:, ::4].copy()  # every fourth antibody
refresh(small_panel)
panel_query = model.map_query(small_panel, max_epochs=5 if QUICK else 100,
                              progress_bar=not QUICK)
panel_truth = obs_column(small_panel, "celltype").astype(str).to_numpy()
panel_accuracy = float(np.mean(knn.predict(panel_query.get_latent_representation())
                               == panel_truth))
print(f"protein only, {small_panel['adt'].n_vars} of {query['adt'].n_vars} antibodies: "
      f"label transfer accuracy {panel_accuracy:.3f}")

# %% [markdown]
# Reference and query together in one UMAP (an AnnData with the two embeddings stacked):

# %%
joint = ad.AnnData(
    obs=pd.DataFrame({
        "celltype": np.concatenate([obs_column(reference, "celltype").astype(str), truth]),
        "dataset": ["reference"] * reference.n_obs + ["query (mapped)"] * query.n_obs,
    }, index=[*reference.obs_names, *query.obs_names]),
    obsm={"X_omnivae": np.concatenate([reference.obsm["X_omnivae"], query.obsm["X_omnivae"]])},
)
omnivae.tl.umap(joint)
omnivae.pl.latent_umap(joint, color=["celltype", "dataset"],
                       save=FIGURES / "mosaic_reference_and_query_umap.png")
