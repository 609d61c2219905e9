"""Where every artifact lives, named once.

A dataset's artifacts sit under ``<data_dir>/<dataset>/``: one folder per stage (a DVC
``outs`` entry), its metrics in ``metrics/<stage>.json`` and its plots in ``plots/<stage>/``,
both outside that folder because DVC refuses overlapping outputs. Stages, queries and the
CLI ask :class:`DatasetLayout` for a path instead of spelling folder names, and the
self-contained folders (a model, an index) name their files with the constants below, so a
folder copied elsewhere is read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Inside a model folder (``finetune``'s output, also when copied elsewhere).
MODEL_FILE = "model.keras"
MODEL_SIDECAR = "model.json"
TRAINING_LOG = "training_log.csv"
# Inside an ingest folder.
MANIFEST_FILE = "manifest.csv"
MANIFEST_SIDECAR = "manifest.json"
REJECTED_FILE = "rejected.csv"
CORPUS_FILE = "corpus.txt"
# Inside a spectrogram folder (its manifest.csv and rejected.csv are named as ingest's).
SPECTROGRAM_SIDECAR = "spectrogram.json"
# Inside an embed folder.
EMBEDDINGS_FILE = "embeddings.npy"
EMBEDDINGS_SIDECAR = "embeddings.json"
# Inside an index folder (``search``'s output, and the word index of ``word2vec``).
INDEX_FILE = "index.faiss"
INDEX_SIDECAR = "index.json"
# An index stored on disk keeps its inverted lists beside index.faiss, memory-mapped when loaded.
INDEX_DATA_FILE = "index.ivfdata"
# Beside their stage's outputs: what cluster and heatmap did, and with which inputs.
CLUSTER_SIDECAR = "cluster.json"
HEATMAP_SIDECAR = "heatmap.json"
# Inside a word2vec folder.
VECTORS_FILE = "vectors.npy"  # word vectors: float32 rows in vocab.csv order
VOCAB_FILE = "vocab.csv"  # rank,word,count: the word of each row of vectors.npy
WORD2VEC_SIDECAR = "word2vec.json"
# Beside the class folders of the sample images: one bounding box per image.
BOXES_FILE = "boxes.csv"
BOXES_COLUMNS = ("path", "label", "x_min", "y_min", "x_max", "y_max")
# ``dlpipe report`` writes <data_dir>/report/: the index page, and one folder per dataset (a DVC
# output each, so the index stage can depend on their parent folder without overlapping them).
REPORT_DIR = "report"
REPORT_PAGE = "index.html"
REPORT_SUMMARY = "summary.json"


@dataclass(frozen=True)
class DatasetLayout:
    """The artifact paths of one dataset, rooted at ``<data_dir>/<dataset>``."""

    root: Path
    name: str

    def stage_dir(self, stage: str) -> Path:
        """The output folder of ``stage`` (``ingest``, ``spectrogram``, ``embed``, ...)."""
        return self.root / stage

    def metrics(self, stage: str) -> Path:
        """``metrics/<stage>.json``: the stage's DVC metrics."""
        return self.root / "metrics" / f"{stage}.json"

    def plots(self, stage: str) -> Path:
        """``plots/<stage>/``: the stage's DVC plots (CSVs, PNGs, DVCLive folders)."""
        return self.root / "plots" / stage

    @property
    def ingest_dir(self) -> Path:
        """``ingest/``: manifest.csv, rejected.csv, manifest.json (and corpus.txt for text)."""
        return self.stage_dir("ingest")

    @property
    def spectrogram_dir(self) -> Path:
        """``spectrogram/``: an audio dataset's window images and their image-style manifest."""
        return self.stage_dir("spectrogram")

    @property
    def model_dir(self) -> Path:
        """``model/``: model.keras and its self-describing sidecar model.json."""
        return self.root / "model"

    @property
    def model_file(self) -> Path:
        """``model/model.keras``."""
        return self.model_dir / MODEL_FILE

    @property
    def embed_dir(self) -> Path:
        """``embed/``: embeddings.npy and embeddings.json."""
        return self.stage_dir("embed")

    @property
    def search_dir(self) -> Path:
        """``search/``: index.faiss, index.json and the example sheet."""
        return self.stage_dir("search")

    @property
    def index_file(self) -> Path:
        """``search/index.faiss``."""
        return self.search_dir / INDEX_FILE

    @property
    def word2vec_dir(self) -> Path:
        """``word2vec/``: the vectors, the gensim model, exports and word2vec.json."""
        return self.stage_dir("word2vec")

    @property
    def vectors_file(self) -> Path:
        """``word2vec/vectors.npy``."""
        return self.word2vec_dir / VECTORS_FILE

    def resume_dir(self, stage: str) -> Path:
        """``.<stage>-resume/``: checkpoints of an interrupted run, outside the outputs DVC deletes."""
        return self.root / f".{stage}-resume"


@dataclass(frozen=True)
class ReportLayout:
    """The report's paths, rooted at ``<data_dir>/report``."""

    root: Path

    @property
    def index_page(self) -> Path:
        """``report/index.html``: every dataset's headline figures, linking to its page."""
        return self.root / REPORT_PAGE

    @property
    def datasets_dir(self) -> Path:
        """``report/datasets/``: one folder per dataset (what the index stage depends on)."""
        return self.root / "datasets"

    def dataset_dir(self, dataset: str) -> Path:
        """``report/datasets/<dataset>/``: its page and the summary the index reads."""
        return self.datasets_dir / dataset

    def page(self, dataset: str) -> Path:
        """``report/datasets/<dataset>/index.html``: the dataset's self-contained page."""
        return self.dataset_dir(dataset) / REPORT_PAGE

    def summary(self, dataset: str) -> Path:
        """``report/datasets/<dataset>/summary.json``: its headline figures, for the index page."""
        return self.dataset_dir(dataset) / REPORT_SUMMARY
