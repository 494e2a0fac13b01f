"""Same seed, same numbers: embeddings and predictions that a code move must not change.

Trains small models on the CITE and Multiome starters (``../shared/data``) with fixed seeds
through the public API only, and writes every embedding and prediction to one ``.npz``;
``--compare`` checks a second run against a first one bit for bit. Run it on the commit
before a refactor and on the one after::

    python benchmarks/run.py --study same_results --out before.npz      # on the old commit
    python benchmarks/run.py --study same_results --compare before.npz  # on the new one

Exit status 0 only when every array is identical (``numpy.array_equal``, NaNs equal).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import mudata as md
import numpy as np

import omnivae

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
EPOCHS = 8


def _dataset(name: str) -> md.MuData:
    return md.read_h5mu(DATA / f"{name}.h5mu")  # obs holds "batch" and "cell_type"


def _run_case(mdata: md.MuData, target: str, key: str, arrays: dict[str, np.ndarray],
              **options: object) -> omnivae.Model:
    model = omnivae.Model(mdata, batch_key="batch", seed=0, **options)  # type: ignore[arg-type]
    model.train(max_epochs=EPOCHS, progress_bar=False)
    arrays[f"{key}/latent"] = model.get_latent_representation()
    pred = model.predict(target, n_samples=5, seed=1, interval=0.9)
    arrays[f"{key}/predict"] = np.asarray(pred.X)
    arrays[f"{key}/std"] = np.asarray(pred.layers["std"])
    arrays[f"{key}/lower"] = np.asarray(pred.layers["lower"])
    arrays[f"{key}/upper"] = np.asarray(pred.layers["upper"])
    arrays[f"{key}/history"] = model.history.to_numpy(dtype=float)
    return model


def collect() -> dict[str, np.ndarray]:
    """Every array the check compares, keyed ``dataset/case/what``."""
    arrays: dict[str, np.ndarray] = {}
    cases = {
        "neurips2021_bmmc_cite_starter": "adt",
        "neurips2021_bmmc_multiome_starter": "atac",
    }
    for name, target in cases.items():
        mdata = _dataset(name)
        model = _run_case(mdata, target, f"{name}/default", arrays)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(os.path.join(tmp, "m"))
            loaded = omnivae.Model.load(os.path.join(tmp, "m"), mdata)
            arrays[f"{name}/default/loaded_latent"] = loaded.get_latent_representation()
        _run_case(mdata, target, f"{name}/mmvae", arrays, model="mmvae")
        _run_case(mdata, target, f"{name}/poe_mog", arrays, fusion="poe", prior="mog",
                  batch_penalty="hsic")
        batches = sorted(mdata.obs["batch"].unique())
        reference = mdata[mdata.obs["batch"] != batches[-1]].copy()
        query = mdata[mdata.obs["batch"] == batches[-1]].copy()
        ref_model = omnivae.Model(reference, batch_key="batch", seed=0)
        ref_model.train(max_epochs=EPOCHS, progress_bar=False)
        mapped = ref_model.map_query(query, max_epochs=3, progress_bar=False)
        arrays[f"{name}/query/latent"] = mapped.get_latent_representation()
        arrays[f"{name}/query/predict"] = np.asarray(mapped.predict(target).X)
        de = omnivae.tl.differential_expression(
            mdata, model, groupby="cell_type", group1=str(mdata.obs["cell_type"].iloc[0]),
            modality=target, n_samples=20)
        arrays[f"{name}/default/de_lfc"] = de.iloc[:, :3].to_numpy(dtype=float)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the arrays to this .npz")
    group.add_argument("--compare", type=Path, help="compare against this .npz")
    args = parser.parse_args(argv)
    arrays = collect()
    if args.out:
        np.savez_compressed(args.out, **arrays)
        print(f"wrote {len(arrays)} arrays to {args.out}")
        return 0
    before = np.load(args.compare)
    differ = [k for k in sorted(set(before.files) | set(arrays))
              if k not in before.files or k not in arrays
              or not np.array_equal(before[k], arrays[k], equal_nan=True)]
    for key in differ:
        print(f"DIFFERS: {key}")
    print(f"{len(arrays) - len(differ)} of {len(arrays)} arrays identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
