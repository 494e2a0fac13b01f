"""How :class:`omnivae.Model` turns a MuData (or an AnnData, or a file) into its inputs: the
data setup (in memory or backed; new cells on the training setup) and the columns of the batch
probe. The user's other choices are resolved in :mod:`omnivae.model.choices`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import anndata as ad
import mudata as md

from omnivae.data.backed import BackedCellData, BackedOptions, setup_backed
from omnivae.data.cells import CellData
from omnivae.data.checks import is_prediction_modality
from omnivae.data.inputs import InputOptions, as_mudata, input_layers, read_input
from omnivae.data.setup import SetupInfo, setup_mudata


def model_input(
    data: md.MuData | ad.AnnData | str | Path, options: InputOptions, *,
    layer: str | Mapping[str, str | None] | None, backed: bool | BackedOptions | None,
) -> tuple[md.MuData | str | Path, str | Mapping[str, str | None] | None]:
    """What a :class:`omnivae.Model` is given, as the MuData (or ``.h5mu`` path, opened by
    :func:`~omnivae.data.backed.resolve_backed`) it trains on, and its ``layer`` option: an
    AnnData is converted by :func:`~omnivae.data.inputs.as_mudata` (one layer name then applies
    to the modalities split from ``X``, not to proteins from ``obsm``); ``.h5ad`` and 10x
    ``.h5`` files are read into memory by :func:`~omnivae.data.inputs.read_input`.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((4, 3), np.float32))
    >>> adata.obsm["protein_expression"] = np.ones((4, 2))
    >>> mdata, layer = model_input(adata, InputOptions(protein_key="protein_expression"),
    ...                            layer="counts", backed=None)
    >>> list(mdata.mod), layer
    (['rna', 'adt'], {'rna': 'counts', 'adt': None})
    """
    if isinstance(data, (str, Path)):
        if Path(data).suffix.lower() == ".h5mu":
            if options.given:
                raise ValueError(
                    f"protein_key, protein_names and feature_types describe an AnnData; "
                    f"{Path(data).name} is a MuData file, whose modalities are given (proteins "
                    "as a modality, e.g. 'adt'). Leave these options out.")
            return data, layer
        if backed not in (None, False):
            raise ValueError(
                f"backed training reads .h5mu files only; {Path(data).name} is read into "
                "memory without backed=..., or convert it once for training on disk: "
                "omnivae.data.read_input(path).write_h5mu('cells.h5mu').")
        data = read_input(data, protein_key=options.protein_key,
                          protein_names=options.protein_names, feature_types=options.feature_types)
    else:
        data = as_mudata(data, protein_key=options.protein_key,
                         protein_names=options.protein_names, feature_types=options.feature_types)
    return data, input_layers(layer, data, options)


def setup_model_data(
    mdata: md.MuData, backed: BackedOptions | None, *,
    modalities: Sequence[str] | None, likelihoods: Mapping[str, str] | None,
    layer: str | Mapping[str, str | None] | None, batch_key: str | None,
    penalty_keys: Sequence[str] | None, penalty_label_key: str | None,
    reference: SetupInfo | None,
) -> tuple[CellData | BackedCellData, SetupInfo]:
    """The model's data and setup: :func:`~omnivae.data.backed.setup_backed` when ``backed``
    options are given (counts stay on disk), else :func:`~omnivae.data.setup_mudata`.

    Examples
    --------
    >>> import omnivae
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna", "adt"), seed=0)
    >>> data, setup = setup_model_data(sim, None, modalities=None, likelihoods=None,
    ...                                layer=None, batch_key=None, penalty_keys=None,
    ...                                penalty_label_key=None, reference=None)
    >>> data.n_cells, setup.modalities
    (50, ('rna', 'adt'))
    """
    if backed is not None:  # counts stay on disk
        return setup_backed(
            mdata, backed, modalities=modalities, likelihoods=likelihoods,
            layer=layer, batch_key=batch_key, penalty_keys=penalty_keys or (),
            label_key=penalty_label_key, reference=reference,
        )
    return setup_mudata(
        mdata, modalities=modalities, likelihoods=likelihoods, layer=layer,
        batch_key=batch_key, penalty_keys=penalty_keys or (),
        label_key=penalty_label_key, reference=reference,
    )


def setup_new_cells(mdata: md.MuData | ad.AnnData, setup: SetupInfo,
                    backed: BackedOptions | None, inputs: InputOptions | None = None,
                    ) -> CellData | BackedCellData:
    """Cells other than a model's training data as its inputs, checked against the training
    ``setup`` (features, batches), with the training rules: which cells have which modality
    comes from MuData membership, so cells may lack any of the model's modalities (a
    modality with only some of the cells, or none at all: e.g. RNA-only cells of a CITE-seq
    model); batches are coded as in training, whatever modalities the cells have (one batch
    when the model has no ``batch_key``, for a query model of such a reference its query's;
    else labels it knows; an unknown label is an error pointing to reference mapping).

    Read from disk when ``mdata`` is backed (with the model's ``backed`` options; it must then
    hold every modality of the model), in memory otherwise (cells lacking whole modalities:
    :func:`~omnivae.model.mapping.data.setup_known_cells`). Modalities the model was not trained on
    are ignored with a warning (omnivae's own predictions, e.g. ``adt_imputed``, silently).
    An AnnData is converted with the model's ``inputs`` (:func:`~omnivae.data.inputs.as_mudata`),
    less ``protein_key`` when its ``obsm`` lacks that key (cells without protein).

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data import setup_mudata
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna", "adt"), missing_fraction=0)
    >>> _, setup = setup_mudata(sim, batch_key="batch")
    >>> rna_only = sim[:20].copy()
    >>> del rna_only.mod["adt"]
    >>> [setup_new_cells(cells, setup, None).n_cells for cells in (sim[:10].copy(), rna_only)]
    [10, 20]
    """
    if isinstance(mdata, ad.AnnData):
        inputs = inputs or InputOptions()
        if inputs.protein_key is not None and inputs.protein_key not in mdata.obsm:
            inputs = replace(inputs, protein_key=None, protein_names=None)
        mdata = as_mudata(mdata, protein_key=inputs.protein_key,
                          protein_names=inputs.protein_names, feature_types=inputs.feature_types)
    unknown = [m for m in mdata.mod
               if m not in setup.modalities and not is_prediction_modality(mdata, m)]
    if unknown:
        warnings.warn(
            f"Modalities {unknown} are not among the model's {list(setup.modalities)} and are "
            "ignored (the model has no encoder for them); cells are embedded and predicted from "
            "the model's modalities they have. Drop them (del mdata.mod[name]) to silence this.",
            UserWarning, stacklevel=4)
    lacking = [m for m in setup.modalities if m not in mdata.mod or not mdata.mod[m].n_obs]
    if mdata.isbacked:
        if lacking:
            raise ValueError(
                f"These backed cells lack the model's modalities {lacking}: cells lacking a "
                "whole modality are read in memory only; open the file with "
                "mudata.read_h5mu(path) (not backed=True).")
        return setup_backed(mdata, backed, reference=setup)[0]
    if not lacking:
        return setup_mudata(mdata, reference=setup)[0]
    from omnivae.model.mapping.data import setup_known_cells  # cells lacking whole modalities

    return setup_known_cells(mdata, setup)


def probe_columns(setup: SetupInfo) -> dict[str, int]:
    """Batch columns of the batch probe: the penalised ones, else ``batch_key`` if it has two
    or more batches (name: number of categories).

    Examples
    --------
    >>> import omnivae
    >>> from omnivae.data import setup_mudata
    >>> sim = omnivae.datasets.simulate(50, modalities=("rna",), n_batches=2, seed=0)
    >>> probe_columns(setup_mudata(sim, batch_key="batch")[1])
    {'batch': 2}
    """
    if setup.penalty_keys:
        return {k: len(setup.penalty_categories[k]) for k in setup.penalty_keys}
    if setup.batch_key is not None and len(setup.batch_categories) > 1:
        return {setup.batch_key: len(setup.batch_categories)}
    return {}
