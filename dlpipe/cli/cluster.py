"""``dlpipe cluster``: k-means on the embeddings against a raw-pixel baseline."""

from __future__ import annotations

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
    IMAGE_LIKE,
    DatasetOption,
    JsonOption,
    ParamsOption,
    SetOption,
    VerboseOption,
    print_results_json,
    run_per_dataset,
)


def cluster(
    dataset: DatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Cluster the embeddings with k-means (k fixed or chosen by silhouette) and compare with raw pixels.

    Writes data/<dataset>/cluster (assignments.csv, umap.csv/png, the UMAP reducer, one contact sheet
    per cluster) and metrics/cluster.json (NMI, ARI, purity of deep features vs raw pixels).
    Example: dlpipe cluster --dataset shapes --set cluster.k=4
    """
    results = run_per_dataset("cluster", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        print_results_json(results)
        return
    from dlpipe.core.console import info

    for result in results:
        m = result.metrics
        versus = f", NMI {m['nmi']:.3f} (raw pixels {m['raw_pixels_nmi']:.3f})" if "nmi" in m else ""
        info(f"cluster {result.dataset}: k={result.k} ({m['k_source']}), silhouette {m['silhouette']:.3f}{versus} -> {result.out_dir}")
