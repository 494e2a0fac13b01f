"""Which dataset has which label and batch column and which prediction tasks: one place.

Columns checked against the files in ``../shared/data`` (see its README); every column named
here is in the MuData ``obs`` of its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PredictionTask:
    """Withhold ``target`` for 25 % of the cells and predict it from ``source``."""

    source: str
    target: str
    metric: str  # "pearson" (mean over features) or "auroc" (over all cell x feature pairs)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    label_key: str | None
    batch_key: str | None
    tasks: tuple[PredictionTask, ...] = field(default_factory=tuple)


RNA_TO_ADT = PredictionTask("rna", "adt", "pearson")
RNA_TO_ATAC = PredictionTask("rna", "atac", "auroc")
ATAC_TO_RNA = PredictionTask("atac", "rna", "pearson")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in [
        DatasetSpec("neurips2021_bmmc_cite_starter", "cell_type", "batch", (RNA_TO_ADT,)),
        DatasetSpec("neurips2021_bmmc_multiome_starter", "cell_type", "batch",
                    (RNA_TO_ATAC, ATAC_TO_RNA)),
        DatasetSpec("totalvi_sln111_subset", "cell_type", "batch", (RNA_TO_ADT,)),
        DatasetSpec("quickstart_pbmc_mosaic", "celltype", "batch", (RNA_TO_ADT,)),
        DatasetSpec("mop_snareseq_c1", "cell_type", "batch", (RNA_TO_ATAC, ATAC_TO_RNA)),
        DatasetSpec("pbmc10k_protein_v3_rna4000_adt14", None, None, (RNA_TO_ADT,)),
    ]
}

SMALL_DATASETS = ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter",
                  "totalvi_sln111_subset", "quickstart_pbmc_mosaic")
QUICK_DATASETS = ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter")
# Speed comparisons: dataset -> the scvi-tools peer it is compared with.
SPEED_PAIRS = {"pbmc10k_protein_v3_rna4000_adt14": "totalvi", "mop_snareseq_c1": "multivi"}
WITHHELD_FRACTION = 0.25
