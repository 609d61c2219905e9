"""Typed parameters: one pydantic model per params.yaml section.

``load_params`` reads params.yaml, applies ``--set section.key=value`` overrides
and validates everything before any work starts. Every key is required in the
file (params.yaml is the single source of truth, and DVC can only track keys
that are written there); wrong types, unknown keys (typos) and out-of-range
values raise :class:`~dlpipe.core.errors.ConfigError` naming the key path.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dlpipe.core.errors import ConfigError
from dlpipe.core.layout import REPORT_DIR, DatasetLayout, ReportLayout

Modality = Literal["image", "audio", "text"]
Task = Literal["classification", "regression", "bbox", "regions", "keypoints"]
# The box columns of bbox and regions datasets, in this order, when targets.columns does not name them.
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are not silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BaseConfig(Section):
    """``base``: settings every stage shares."""

    seed: int = Field(ge=0, description="seed for every random choice; stages derive their own from it")
    data_dir: str = Field(min_length=1, description="folder (relative to params.yaml) that holds every artifact")


class TargetsConfig(Section):
    """``datasets.<name>.targets``: which columns of the targets CSV a regression or localisation task learns."""

    columns: list[str] = Field(
        default_factory=list,
        description="regression: the numeric columns to predict; bbox / regions: the x_min, y_min, x_max, y_max "
        "columns in that order (default: those names)",
    )
    points: list[str] = Field(
        default_factory=list, description="keypoints: the point names; the CSV holds <name>_x and <name>_y per point"
    )
    flip_pairs: list[list[str]] = Field(
        default_factory=list, description="keypoints: pairs of points that swap under a horizontal flip (left_eye, right_eye)"
    )
    flip_negate: list[str] = Field(
        default_factory=list, description="regression: columns whose sign flips in a mirrored image (a steering angle)"
    )
    flip_invariant: list[str] = Field(
        default_factory=list, description="regression: columns a mirrored image keeps (an age, a count)"
    )

    def value_columns(self, task: str) -> list[str]:
        """The CSV columns holding the targets of ``task``, in the order the head reads them."""
        if task == "keypoints":
            return [f"{point}_{axis}" for point in self.points for axis in ("x", "y")]
        if task in ("bbox", "regions"):
            return list(self.columns or BOX_COLUMNS)
        return list(self.columns)


class DatasetConfig(Section):
    """One dataset of ``datasets.<kind>``: where it lives and what a model of it learns.

    ``modality`` (and for text, whether it is labelled) comes from the kind it is listed under
    (see :data:`DATASET_KINDS`); params.yaml does not spell it.
    """

    modality: Modality
    source: str = Field(
        min_length=1,
        description="image/audio: a folder with one sub-folder per class, or a CSV of path,label (for another task: "
        "a CSV of path plus the target columns); text: a file or a folder of text files (relative to params.yaml)",
    )
    # Optional, like overrides below: only a labelled text dataset writes it.
    labels: Literal["none", "folders", "csv", "fasttext"] = Field(
        default="none",
        description="text only: none (an unlabelled corpus for word2vec), folders (one sub-folder of .txt documents "
        "per class), csv (ingest.text.text_column and label_column) or fasttext (lines like '__label__pos some text')",
    )
    # Optional: classification, the default, needs no targets.
    task: Task = Field(
        default="classification",
        description="what a model of this dataset learns (images only for all but classification): classification, "
        "regression (numbers), bbox (one box), regions (an S x S grid of 'does the object cover this cell'), keypoints",
    )
    targets: TargetsConfig | None = Field(default=None, description="the target columns of a task other than classification")
    # Optional (the one exception to "every key is written"): most datasets need none.
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="stage params for this dataset only, as section.key: value (e.g. finetune.augment.flip: false)",
    )

    @model_validator(mode="after")
    def _labels_only_for_text(self) -> DatasetConfig:
        if self.labels != "none" and self.modality != "text":
            raise ValueError(
                f"labels: {self.labels} is for text datasets; {self.modality} datasets are labelled by class folders or a path,label CSV"
            )
        return self

    @model_validator(mode="after")
    def _targets_fit_the_task(self) -> DatasetConfig:
        if self.task == "classification":
            if self.targets is not None:
                raise ValueError("targets: only a task other than classification reads target columns (set task, or remove targets)")
            return self
        if self.modality != "image":
            raise ValueError(f"task: {self.task} needs images; {self.modality} datasets are classified (task: classification)")
        targets = self.targets or TargetsConfig()
        columns = targets.value_columns(self.task)
        if self.task == "regression" and not columns:
            raise ValueError("task: regression needs targets.columns, the numeric CSV columns to predict")
        if self.task in ("bbox", "regions") and len(columns) != 4:
            raise ValueError(f"task: {self.task} needs 4 targets.columns (x_min, y_min, x_max, y_max), got {columns}")
        if self.task == "keypoints" and not targets.points:
            raise ValueError("task: keypoints needs targets.points, the names of the points (columns <name>_x, <name>_y)")
        if len(set(columns)) != len(columns):
            raise ValueError(f"targets: a column is named twice in {columns}")
        self._check_flip_rules(targets, columns)
        return self

    def _check_flip_rules(self, targets: TargetsConfig, columns: list[str]) -> None:
        if self.task != "keypoints" and targets.flip_pairs:
            raise ValueError("targets.flip_pairs: only keypoints have points that swap under a flip")
        if self.task != "regression" and (targets.flip_negate or targets.flip_invariant):
            raise ValueError("targets.flip_negate / flip_invariant: only regression columns have a sign; boxes and points are mirrored")
        for pair in targets.flip_pairs:
            if len(pair) != 2 or not set(pair) <= set(targets.points) or pair[0] == pair[1]:
                raise ValueError(f"targets.flip_pairs: {pair} must be two different names of targets.points {targets.points}")
        for key in ("flip_negate", "flip_invariant"):
            unknown = [c for c in getattr(targets, key) if c not in columns]
            if unknown:
                raise ValueError(f"targets.{key}: {unknown} are not in targets.columns {columns}")
        both = set(targets.flip_negate) & set(targets.flip_invariant)
        if both:
            raise ValueError(f"targets: {sorted(both)} are both flip_negate and flip_invariant")

    @property
    def labelled(self) -> bool:
        """True for every dataset a model can train on (all but an unlabelled text corpus)."""
        return self.modality != "text" or self.labels != "none"

    @property
    def target_columns(self) -> list[str]:
        """The CSV columns a task other than classification learns ([] for classification)."""
        return [] if self.task == "classification" else (self.targets or TargetsConfig()).value_columns(self.task)


class SampleImagesConfig(Section):
    """``sample.images``: the generated shapes dataset."""

    per_class: int = Field(ge=1, le=100_000)
    size: int = Field(ge=32, le=2048, description="side of the square images in pixels")
    jpeg_fraction: float = Field(ge=0, le=1, description="share of images saved as JPEG (the rest PNG)")


class SampleAudioConfig(Section):
    """``sample.audio``: the generated sounds dataset."""

    per_class: int = Field(ge=1, le=100_000)
    duration: float = Field(gt=0.1, le=60, description="clip length in seconds (varied by up to ±25%)")
    sample_rates: list[int] = Field(min_length=1, description="sample rates to mix across files")

    @field_validator("sample_rates")
    @classmethod
    def _rates_in_range(cls, rates: list[int]) -> list[int]:
        for rate in rates:
            if not 4_000 <= rate <= 192_000:
                raise ValueError(f"expected sample rates between 4000 and 192000 Hz, got {rate}")
        return rates


class SampleSceneConfig(Section):
    """``sample.road`` / ``sample.triangles``: a generated dataset with numeric targets."""

    count: int = Field(ge=1, le=100_000, description="images to draw")
    size: int = Field(ge=32, le=2048, description="side of the square images in pixels")


class SampleConfig(Section):
    """``sample``: parameters of the bundled demo data generators."""

    images: SampleImagesConfig
    audio: SampleAudioConfig
    road: SampleSceneConfig
    triangles: SampleSceneConfig


class ImageIngestConfig(Section):
    """``ingest.image``: what counts as a usable image."""

    min_side: int = Field(ge=1, description="reject images whose shorter side is below this")
    max_pixels: int = Field(ge=1, description="reject images with more pixels (decompression bombs)")


class AudioIngestConfig(Section):
    """``ingest.audio``: what counts as a usable clip."""

    min_duration: float = Field(ge=0, description="reject clips shorter than this many seconds")


class TextIngestConfig(Section):
    """``ingest.text``: how the corpus is decoded."""

    encoding: str = Field(description="encoding of the source files (utf-8, latin-1, cp1252, ...)")
    text_column: str = Field(min_length=1, description="labels: csv: the column holding each document's text")
    label_column: str = Field(min_length=1, description="labels: csv: the column holding each document's label")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str) -> str:
        try:
            codecs.lookup(name)
        except LookupError:
            raise ValueError(f"expected a Python codec name such as utf-8 or latin-1, got {name!r}") from None
        return name


class IngestConfig(Section):
    """``ingest``: validation, splitting and parallelism of the ingest stage."""

    val_fraction: float = Field(ge=0, lt=1)
    test_fraction: float = Field(ge=0, lt=1)
    max_reject_fraction: float = Field(ge=0, le=1, description="fail when more of the items are rejected")
    workers: int = Field(ge=0, description="decode processes; 0 means one per CPU core")
    image: ImageIngestConfig
    audio: AudioIngestConfig
    text: TextIngestConfig

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> IngestConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 to leave training data, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class SpectrogramConfig(Section):
    """``spectrogram``: log-mel images of fixed-length windows of each audio clip."""

    sample_rate: int = Field(ge=4_000, le=192_000, description="every clip is mixed to mono and resampled to this (Hz)")
    n_fft: int = Field(ge=16, le=65_536, description="FFT size in samples")
    win_length: int = Field(ge=16, le=65_536, description="analysis window (Hann) in samples, at most n_fft")
    hop_length: int = Field(ge=1, le=65_536, description="samples between STFT frames (image columns)")
    n_mels: int = Field(ge=8, le=512, description="mel bands (image rows)")
    fmin: float = Field(ge=0, description="lowest mel band edge in Hz")
    fmax: float = Field(gt=0, description="highest mel band edge in Hz, at most sample_rate / 2")
    top_db: float = Field(gt=0, le=200, description="floor: values more than this below a window's maximum are raised to it")
    reference: Literal["peak", "full_scale"] = Field(
        description="0 dB is each window's loudest mel bin (peak) or a full-scale 1 kHz sine (full_scale)"
    )
    window_seconds: float = Field(gt=0, le=600, description="length of every spectrogram window")
    window_hop_seconds: float = Field(gt=0, le=600, description="step between windows of a long clip")
    short_clips: Literal["pad", "reject"] = Field(description="clips shorter than a window: padded with silence, or rejected")
    scaling: Literal["fixed", "fit"] = Field(
        description="dB-to-pixel range: db_min..db_max (fixed), or the 0.5th..99.5th percentile of the training split (fit)"
    )
    db_min: float = Field(description="dB at pixel value 0 (scaling: fixed)")
    db_max: float = Field(description="dB at the brightest pixel value (scaling: fixed)")
    bit_depth: Literal[8, 16] = Field(description="PNG bits per pixel")
    save_npy: bool = Field(description="also save each window's float32 dB values as .npy")
    max_reject_fraction: float = Field(ge=0, le=1, description="fail when more of the clips are rejected")
    workers: int = Field(ge=0, description="processes; 0 means one per CPU core")

    @model_validator(mode="after")
    def _consistent(self) -> SpectrogramConfig:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if self.fmax > self.sample_rate / 2:
            raise ValueError(f"fmax ({self.fmax}) must not exceed sample_rate / 2 ({self.sample_rate / 2})")
        if self.fmin >= self.fmax:
            raise ValueError(f"fmin ({self.fmin}) must be below fmax ({self.fmax})")
        if self.window_seconds * self.sample_rate < self.n_fft:
            raise ValueError(f"window_seconds ({self.window_seconds}) is shorter than one FFT frame ({self.n_fft} samples)")
        if self.scaling == "fixed" and self.db_min >= self.db_max:
            raise ValueError(f"db_min ({self.db_min}) must be below db_max ({self.db_max})")
        return self


class BackboneConfig(Section):
    """A ConvNet from the registry (``dlpipe.models.backbones``) and its weights."""

    name: str = Field(min_length=1, description="small_cnn, mobilenet, mobilenet_v2, ... (see dlpipe.models.backbones)")
    weights: str = Field(min_length=1, description="imagenet (Keras' cache), none (random), or a path to a weights file")
    alpha: float = Field(gt=0, le=2, description="width multiplier of mobilenet / mobilenet_v2 / mobilenet_v3 (others ignore it)")
    image_size: int = Field(ge=32, le=1024, description="side of the square network input in pixels")


class AugmentConfig(Section):
    """``finetune.augment``: random changes to training images (training split only)."""

    flip: bool = Field(description="random horizontal flips")
    rotation: float = Field(ge=0, le=0.5, description="max rotation as a fraction of a full turn")
    zoom: float = Field(ge=0, lt=1, description="max zoom in or out as a fraction of the size")
    translation: float = Field(ge=0, lt=1, description="max shift as a fraction of the size")
    contrast: float = Field(ge=0, lt=1, description="max contrast change factor")


class TextCnnConfig(Section):
    """``finetune.text.cnn``: the Kim / Zhang & Wallace sentence ConvNet."""

    widths: list[int] = Field(min_length=1, description="window widths in words of the parallel Conv1D filters")
    filters: int = Field(ge=1, le=4096, description="feature maps per width (1-max pooled over time)")

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, widths: list[int]) -> list[int]:
        if any(width < 1 or width > 64 for width in widths):
            raise ValueError(f"every width must be between 1 and 64 words, got {widths}")
        return widths


class RnnConfig(Section):
    """``finetune.rnn``: stacked recurrent layers (GRU or LSTM), for text and for audio frames."""

    units: int = Field(ge=1, le=4096, description="units per recurrent layer (per direction when bidirectional)")
    layers: int = Field(ge=1, le=8, description="stacked recurrent layers")


class TextModelConfig(Section):
    """``finetune.text``: a classifier over word sequences, for labelled text datasets."""

    architecture: Literal["cnn", "gru", "lstm", "bigru", "bilstm"] = Field(
        description="cnn (parallel Conv1D widths, 1-max pooling), gru, lstm, or their bidirectional forms"
    )
    word2vec: str = Field(
        min_length=1, description="none (embeddings learnt from scratch) or a word2vec stage folder whose vectors start them"
    )
    freeze_embeddings: bool = Field(description="keep the word2vec vectors fixed (the embedding layer does not train)")
    embedding_dim: int = Field(ge=1, le=4096, description="word vector size; with word2vec it must equal the vectors' size")
    max_length: int = Field(ge=1, le=100_000, description="tokens per document; longer ones are truncated (and counted)")
    max_vocabulary: int = Field(ge=1, description="most frequent training-split words kept; the rest map to <oov>")
    min_count: int = Field(
        ge=1, description="training-split words seen fewer times map to <oov> (at least 2 lets <oov> itself be learnt)"
    )
    batch_size: int = Field(ge=1, le=4096)
    epochs: int = Field(ge=1, description="most epochs; early stopping (finetune.early_stopping_patience) may end sooner")
    lr: float = Field(gt=0, lt=1, description="Adam learning rate")
    dropout: float = Field(ge=0, lt=1, description="dropout before the output layer")
    clipnorm: float = Field(ge=0, description="gradient clipping by norm, against exploding RNN gradients; 0 turns it off")
    cnn: TextCnnConfig


class AudioSequenceConfig(Section):
    """``finetune.audio_sequence``: an audio dataset's spectrogram windows read as sequences of mel frames."""

    architecture: Literal["none", "gru", "lstm", "bigru", "bilstm"] = Field(
        description="none (the image backbone reads each window) or a recurrent network over its frames (time steps x mel bands)"
    )
    clipnorm: float = Field(ge=0, description="gradient clipping by norm for the recurrent network; 0 turns it off")


class RegionsConfig(Section):
    """``finetune.regions``: the grid a ``regions`` task predicts (one sigmoid per cell)."""

    grid: int = Field(ge=2, le=32, description="cells per side of the S x S grid over the image")
    cover: float = Field(
        gt=0, le=1, description="a cell is positive when the box covers this share of it (and the box centre's cell always)"
    )


class FinetuneConfig(Section):
    """``finetune``: transfer learning in two phases (head on a frozen base, then the top of the base)."""

    backbone: BackboneConfig
    batch_size: int = Field(ge=1, le=4096)
    dropout: float = Field(ge=0, lt=1)
    head_epochs: int = Field(ge=1, description="phase (a): epochs with the base frozen (all layers train when weights: none)")
    head_lr: float = Field(gt=0, lt=1)
    fine_tune_epochs: int = Field(ge=0, description="phase (b): epochs with the top of the base unfrozen (0 skips it)")
    fine_tune_lr: float = Field(gt=0, lt=1)
    unfreeze_top: int = Field(ge=0, description="layers at the top of the base to unfreeze in phase (b); BatchNorm stays frozen")
    early_stopping_patience: int = Field(ge=1, description="epochs without a lower validation loss before stopping")
    class_weight: Literal["none", "balanced"]
    clipnorm: float = Field(ge=0, description="gradient clipping by norm; 0 turns it off")
    mixed_precision: bool = Field(description="float16 compute (for GPUs; slow on CPUs)")
    distribute: Literal["none", "mirrored"] = Field(
        description="mirrored: synchronous data-parallel training over every GPU of this machine "
        "(every logical CPU without GPUs) with tf.distribute.MirroredStrategy; batch_size stays the global batch"
    )
    cache_max_mb: int = Field(ge=0, description="keep decoded images, and a frozen base's features, in memory when each fits in N MiB")
    top_losses: int = Field(ge=0, le=100, description="test items (images, documents) on the top-losses sheet")
    augment: AugmentConfig
    loss: Literal["mse", "mae", "huber"] = Field(
        description="numeric targets (regression, bbox, keypoints); classification and regions use cross-entropy"
    )
    regions: RegionsConfig
    rnn: RnnConfig
    audio_sequence: AudioSequenceConfig
    text: TextModelConfig


class RayEngineConfig(Section):
    """``embed.ray``: how the ``ray`` engine spreads batch inference over a Ray cluster."""

    address: str = Field(
        description="a Ray cluster to join (ray://host:10001 or host:6379); empty: $RAY_ADDRESS if set, else a local Ray on this machine"
    )
    actors: int = Field(
        ge=0, description="model replicas (Ray actors), each loading the model once; 0: as many as the cluster's resources allow"
    )
    cpus_per_actor: float = Field(gt=0, le=1024, description="CPUs reserved by each actor (its decode and TensorFlow threads)")
    gpus_per_actor: float = Field(ge=0, le=64, description="GPUs reserved by each actor (fractions share a GPU); 0 runs on CPUs")
    shard_batches: int = Field(
        ge=1, le=100_000, description="batches (of embed.batch_size items) per shard: the unit of work an actor takes and Ray retries"
    )


class EmbedConfig(Section):
    """``embed``: penultimate-layer features of every image, from the fine-tuned model or a pretrained backbone."""

    source: Literal["finetuned", "backbone"]
    backbone: BackboneConfig
    batch_size: int = Field(ge=1, le=4096)
    normalize: bool = Field(description="L2-normalise each embedding (cosine similarity = inner product)")
    engine: Literal["local", "ray"] = Field(
        description="local: a tf.data pipeline in this process; ray: Ray Data actors on a local or remote cluster (pip install '.[ray]')"
    )
    ray: RayEngineConfig


class UmapConfig(Section):
    """``cluster.umap``: the 2-D picture of the embeddings."""

    n_neighbors: int = Field(ge=2, le=200, description="neighbourhood size: larger keeps more global structure")
    min_dist: float = Field(ge=0, le=1, description="how tightly points may pack in the picture")
    sample: int = Field(ge=20, description="rows UMAP is fitted on (drawn at random beyond it); the others are placed by transform")


class ClusterConfig(Section):
    """``cluster``: k-means on the embeddings (and on raw pixels as the baseline), UMAP pictures, contact sheets."""

    k: int | Literal["auto"] = Field(description="number of clusters, or auto (best silhouette in k_min..k_max)")
    k_min: int = Field(ge=2, description="smallest k tried when k: auto")
    k_max: int = Field(ge=2, description="largest k tried when k: auto")
    niter: int = Field(ge=1, le=1000, description="k-means iterations")
    nredo: int = Field(ge=1, le=100, description="k-means restarts; the lowest inertia wins")
    silhouette_sample: int = Field(ge=100, description="rows the silhouette score is computed on")
    raw_pixels_side: int = Field(ge=4, le=128, description="side the baseline downscales images to before clustering pixels")
    baseline_sample: int = Field(ge=20, description="rows (drawn at random beyond it) the raw-pixel or bag-of-words baseline uses")
    thumbnails: int = Field(ge=1, le=100, description="images per cluster on its contact sheet")
    umap: UmapConfig

    @field_validator("k")
    @classmethod
    def _k_at_least_two(cls, k: int | str) -> int | str:
        if isinstance(k, int) and k < 2:
            raise ValueError(f"expected auto or an integer >= 2, got {k}")
        return k

    @model_validator(mode="after")
    def _range_ordered(self) -> ClusterConfig:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) is larger than k_max ({self.k_max})")
        largest_k = self.k_max if self.k == "auto" else self.k
        if self.baseline_sample < largest_k:
            raise ValueError(f"baseline_sample ({self.baseline_sample}) is below k ({largest_k}): the baseline could not be clustered")
        return self


class SearchConfig(Section):
    """``search``: the FAISS index over the embeddings and its self-evaluation."""

    index: str = Field(min_length=1, description="auto (chosen by size and memory budget) or a FAISS factory string")
    memory_budget_mb: int = Field(ge=1, description="memory the index may take; auto compresses vectors beyond it")
    storage: Literal["auto", "memory", "ondisk"] = Field(
        description="where the inverted lists live: auto (on disk only when no index fits the budget), memory, or ondisk (IVF only)"
    )
    target_recall: float = Field(gt=0, le=1, description="recall@k vs exact search that search parameters are tuned to")
    k: int = Field(ge=1, le=1000, description="neighbours per query when evaluating (and the query default)")
    eval_queries: int = Field(ge=1, description="test-split items used as evaluation queries (at most)")
    examples: int = Field(ge=0, le=20, description="queries shown on examples.png")

    @model_validator(mode="after")
    def _ondisk_needs_ivf(self) -> SearchConfig:
        if self.storage == "ondisk" and self.index != "auto" and "IVF" not in self.index:
            raise ValueError(f"storage ondisk keeps inverted lists on disk: index must be auto or an IVF factory, got {self.index!r}")
        return self


class HeatmapConfig(Section):
    """``heatmap``: occlusion sensitivity and Grad-CAM on chosen images, with the evidence that the maps are right."""

    methods: list[Literal["occlusion", "gradcam"]] = Field(min_length=1, description="which maps to make")
    patch_size: int | Literal["auto"] = Field(description="occluding patch side in model-input pixels, or auto (an eighth of the input)")
    stride: int | Literal["auto"] = Field(description="step between patch positions in pixels, or auto (half the patch)")
    fill: Literal["mean", "zero", "blur"] = Field(
        description="what covers a patch: the dataset's mean colour, black, or a blurred copy of the image"
    )
    deletion_fill: Literal["mean", "zero", "blur"] = Field(
        description="what replaces deleted cells in the deletion metric (the same for every method and the random map)"
    )
    memory_mb: int = Field(ge=1, description="occluded copies held at once (per forward batch)")
    per_class: int = Field(ge=0, le=1000, description="test-split images explained per class")
    top_losses: int = Field(ge=0, le=1000, description="test-split images with the highest loss explained as well")
    gradcam_layer: str = Field(min_length=1, description="auto (the backbone's last convolutional feature map) or a layer name")
    word_span: int = Field(ge=1, le=100, description="text models: words masked together at each position (1: one at a time)")

    @field_validator("methods")
    @classmethod
    def _no_repeats(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise ValueError(f"expected each method once, got {methods}")
        return methods

    @field_validator("patch_size", "stride")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"expected auto or an integer >= 1, got {value}")
        return value

    def for_input(self, size: int) -> HeatmapConfig:
        """These settings for a model input of ``size`` pixels: ``auto`` resolved, so every image costs the
        same number of occluded copies (15 x 15) whatever the input size."""
        patch = max(1, round(size / 8)) if self.patch_size == "auto" else self.patch_size
        stride = max(1, patch // 2) if self.stride == "auto" else self.stride
        return self.model_copy(update={"patch_size": patch, "stride": stride})


class TokenizeConfig(Section):
    """``word2vec.tokenize``: how the ingested corpus becomes tokens (one sentence per line)."""

    lowercase: bool = Field(description="fold every token to lower case")
    punctuation: Literal["drop", "keep"] = Field(description="drop punctuation, or keep each mark as a token of its own")
    numbers: Literal["keep", "drop", "replace"] = Field(description="keep numbers, drop them, or replace each by <num>")
    max_token_chars: int = Field(ge=1, le=1000, description="longer tokens (URLs, base64, junk) are dropped")
    phrases: bool = Field(description="join frequent word pairs into bigram tokens (new_york) with gensim Phrases")
    phrases_min_count: int = Field(ge=1, description="Phrases: pairs seen fewer times are never joined")
    phrases_threshold: float = Field(gt=0, description="Phrases: score a pair needs to be joined (higher: fewer bigrams)")


class Word2vecEvaluateConfig(Section):
    """``word2vec.evaluate``: the standard benchmarks shipped with gensim."""

    restrict_vocab: int = Field(ge=1, description="only the most frequent words count as known in both benchmarks")


class Word2vecExportConfig(Section):
    """``word2vec.export``: the exports beside the vectors."""

    map_words: int = Field(ge=0, description="most frequent words on the labelled UMAP picture (0 skips it)")
    projector_words: int = Field(ge=0, description="most frequent words in the TensorBoard projector TSVs (0 means all)")


class Word2vecConfig(Section):
    """``word2vec``: tokenise the ingested text once, then train CBOW or skip-gram vectors with gensim."""

    architecture: Literal["cbow", "skipgram"]
    vector_size: int = Field(ge=1, le=10_000, description="dimension of the word vectors")
    window: int = Field(ge=1, le=1000, description="most words on each side of the centre word that count as context")
    min_count: int = Field(ge=1, description="words seen fewer times are left out of the vocabulary")
    negative: int = Field(ge=1, le=100, description="noise words drawn per positive example (negative sampling)")
    sample: float = Field(ge=0, lt=1, description="down-sampling threshold of frequent words (0 turns it off)")
    epochs: int = Field(ge=1, le=10_000, description="passes over the corpus")
    workers: int = Field(ge=0, description="training threads; 0 means one per CPU core; only 1 is reproducible")
    seed: int = Field(ge=0, le=2**32 - 1, description="gensim's seed, and PYTHONHASHSEED of the training process")
    tokenize: TokenizeConfig
    evaluate: Word2vecEvaluateConfig
    export: Word2vecExportConfig


# params.yaml lists datasets under their kind, so that each dvc.yaml stage loops over exactly the
# datasets it applies to (DVC's foreach cannot filter a list): kind -> (modality, labelled text).
DATASET_KINDS: dict[str, tuple[str, bool]] = {
    "image": ("image", False),
    "audio": ("audio", False),
    "text": ("text", True),  # labelled documents: the text classifier's stages
    "corpus": ("text", False),  # unlabelled text: word2vec
}


def dataset_kind(spec: DatasetConfig) -> str:
    """The kind a dataset is listed under in params.yaml (``datasets.<kind>.<name>``)."""
    if spec.modality == "text":
        return "text" if spec.labelled else "corpus"
    return spec.modality


def group_datasets(flat: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Dataset entries that carry their ``modality`` (and ``labels``), grouped by kind as params.yaml writes them.

    The inverse of what loading does; used to write params files and to revalidate with overrides.
    """
    groups: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in DATASET_KINDS}
    for name, entry in flat.items():
        labels = entry.get("labels", "none")
        kind = ("text" if labels != "none" else "corpus") if entry["modality"] == "text" else entry["modality"]
        keep = {key: value for key, value in entry.items() if key != "modality" and not (key == "labels" and value == "none")}
        groups[kind][name] = keep
    return groups


def _flat_datasets(groups: Any) -> Any:
    """``datasets.<kind>.<name>`` entries as ``{name: entry}``, each with the modality its kind gives."""
    if not isinstance(groups, dict):
        return groups  # the field's own validation names what is wrong
    unknown = sorted(str(kind) for kind in groups if kind not in DATASET_KINDS)
    if unknown:
        raise ValueError(
            f"datasets.{unknown[0]}: not a kind of dataset; list each dataset under its kind: "
            f"datasets.{{{', '.join(DATASET_KINDS)}}}.<name> (corpus: unlabelled text for word2vec)"
        )
    missing = [kind for kind in DATASET_KINDS if kind not in groups]
    if missing:
        raise ValueError(f"datasets.{missing[0]}: missing; every kind is written, as {missing[0]}: {{}} when it has no dataset")
    flat: dict[str, Any] = {}
    for kind, entries in groups.items():
        if not isinstance(entries, dict):
            # dvc.yaml loops over each kind, and DVC cannot loop over nothing: an empty kind is {}.
            raise ValueError(f"datasets.{kind}: expected dataset names, each with a source ({kind}: {{}} when there is none)")
        modality, labelled = DATASET_KINDS[kind]
        for name, entry in entries.items():
            where = f"datasets.{kind}.{name}"
            if name in flat:
                raise ValueError(f"{where}: '{name}' is listed under two kinds; dataset names must be unique")
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: expected a mapping with at least source")
            if "modality" in entry:
                raise ValueError(f"{where}.modality: the kind it is listed under ({kind}) gives its modality; remove the key")
            if labelled and entry.get("labels", "none") == "none":
                raise ValueError(
                    f"{where}: labelled text needs labels (folders, csv or fasttext); unlabelled text goes under datasets.corpus"
                )
            if modality == "text" and not labelled and "labels" in entry:
                raise ValueError(f"{where}.labels: a corpus has no labels; labelled text goes under datasets.text")
            flat[name] = {"modality": modality, **entry}
    return flat


class Params(Section):
    """The whole of params.yaml."""

    base: BaseConfig
    datasets: dict[str, DatasetConfig] = Field(min_length=1)
    sample: SampleConfig
    ingest: IngestConfig
    spectrogram: SpectrogramConfig
    finetune: FinetuneConfig
    embed: EmbedConfig
    cluster: ClusterConfig
    search: SearchConfig
    heatmap: HeatmapConfig
    word2vec: Word2vecConfig

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets_by_kind(cls, groups: Any) -> Any:
        return _flat_datasets(groups)

    @field_validator("datasets")
    @classmethod
    def _names_are_folder_safe(cls, datasets: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        for name in datasets:
            if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
                raise ValueError(f"dataset names may hold letters, digits, '-' and '_' only, got {name!r}")
            if name == REPORT_DIR:
                raise ValueError(f"'{REPORT_DIR}' is not a dataset name: <data_dir>/{REPORT_DIR} holds the HTML report")
        return datasets


class Project:
    """Validated params plus the folder they are relative to (the project root)."""

    def __init__(self, params: Params, root: Path, params_path: Path) -> None:
        self.params = params
        self.root = root
        self.params_path = params_path

    @property
    def data_dir(self) -> Path:
        """Folder holding every artifact (``base.data_dir``)."""
        return self.resolve(self.params.base.data_dir)

    def resolve(self, relative: str | Path) -> Path:
        """Resolve a path from params.yaml against the project root."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def dataset(self, name: str) -> DatasetConfig:
        """Return a dataset's config, or a ConfigError listing the known names."""
        try:
            return self.params.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.params.datasets))
            raise ConfigError(f"datasets.{name}: no such dataset in {self.params_path}", f"known datasets: {known}") from None

    def dataset_dir(self, name: str) -> Path:
        """Folder of one dataset's artifacts: ``<data_dir>/<name>``."""
        return self.data_dir / name

    def layout(self, name: str) -> DatasetLayout:
        """Every artifact path of one dataset (see :mod:`dlpipe.core.layout`)."""
        return DatasetLayout(self.dataset_dir(name), name)

    def report_layout(self) -> ReportLayout:
        """The report's paths: ``<data_dir>/report`` (see :mod:`dlpipe.core.layout`)."""
        return ReportLayout(self.data_dir / REPORT_DIR)

    def for_dataset(self, name: str) -> Project:
        """This project with ``datasets.<name>.overrides`` applied: the params a stage uses on that dataset."""
        overrides = self.dataset(name).overrides
        if not overrides:
            return self
        return Project(_with_dataset_overrides(self.params, name, overrides, self.params_path), self.root, self.params_path)


# Sections a dataset may override: the stages' own, not what every dataset shares.
_SHARED_SECTIONS = frozenset({"base", "datasets", "sample"})


def _with_dataset_overrides(params: Params, name: str, overrides: dict[str, Any], params_path: Path) -> Params:
    """Validated params with one dataset's overrides applied; errors name ``datasets.<name>.overrides.<key>``."""
    document = params.model_dump()
    where_dataset = f"datasets.{dataset_kind(params.datasets[name])}.{name}"
    document["datasets"] = group_datasets(document["datasets"])
    for key, value in overrides.items():
        where = f"{where_dataset}.overrides.{key}"
        parts = key.split(".")
        if len(parts) < 2 or not all(parts) or parts[0] in _SHARED_SECTIONS or parts[0] not in document:
            stages = ", ".join(section for section in document if section not in _SHARED_SECTIONS)
            raise ConfigError(f"{params_path}: {where}: expected section.key of a stage section ({stages})")
        try:
            apply_override(document, parts, value)
        except ConfigError as error:
            raise ConfigError(f"{params_path}: {where}: {error.message.split(': ', 1)[-1]}") from None
    try:
        return Params.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(
            f"{params_path}: {where_dataset}.overrides give invalid params:\n{format_validation_error(exc)}",
            "fix the override named above",
        ) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into a key path and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {text!r}: expected section.key=value", "for example --set ingest.workers=2")
    value = bounded_yaml(raw, f"--set {text[:80]!r}: value") if raw.strip() else ""
    return parts, value


# More values than any params file holds: a document that expands beyond it is refused (YAML aliases
# can make a few lines stand for billions of values, and validation would walk each one).
MAX_YAML_VALUES = 100_000


def bounded_yaml(text: str, where: str) -> Any:
    """Parse YAML with ``safe_load`` (no Python objects), refusing deep nesting and alias bombs.

    Raises:
        ConfigError: naming ``where``: not valid YAML, nested too deeply, or expanding past MAX_YAML_VALUES values.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be params") from None
    pending, seen = [document], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise ConfigError(f"{where} expands to more than {MAX_YAML_VALUES:,} values (YAML aliases?)", "write the values out")
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return document


def apply_override(document: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``document[a][b]... = value``, creating nothing but the last key."""
    node: Any = document
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            path = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {'.'.join(parts)}: there is no section {path} in params")
        node = node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {'.'.join(parts)}: {'.'.join(parts[:-1])} is not a section")
    node[parts[-1]] = value


def format_validation_error(error: ValidationError, document: Any = None) -> str:
    """Render pydantic errors as ``key.path: message, got value`` lines.

    With the raw ``document``, a dataset's key path names the kind it is listed under
    (``datasets.image.shapes.source``, as params.yaml spells it).
    """
    groups = document.get("datasets") if isinstance(document, dict) else None
    listed = groups.items() if isinstance(groups, dict) else ()
    kinds = {name: kind for kind, entries in listed if isinstance(entries, dict) for name in entries}
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 2 and loc[0] == "datasets" and loc[1] in kinds:
            loc.insert(1, kinds[loc[1]])
        path = ".".join(loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            lines.append(f"{path}: missing (every key must be written in params.yaml)")
        elif item["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key (a typo?)")
        elif message.startswith(f"{path}."):
            lines.append(message)  # the message names its own key path (how datasets are listed by kind)
        else:
            lines.append(f"{path}: {message}, got {item['input']!r}")
    return "\n".join(lines)


def load_project(params_path: Path | str = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Project:
    """Read, override and validate params.yaml.

    Args:
        params_path: the params file; relative paths inside it resolve against its folder.
        overrides: ``section.key=value`` strings applied in order before validation.

    Raises:
        ConfigError: the file is missing or unreadable, or any value is invalid.
    """
    path = Path(params_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"params file not found: {path}", "run from the project root or pass --params PATH"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a params file", "pass --params PATH to a params.yaml") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    document = bounded_yaml(text, str(path))
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (base, datasets, ...), got {type(document).__name__}")
    for override in overrides:
        apply_override(document, *parse_override(override))
    try:
        params = Params.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{path} is invalid:\n{format_validation_error(exc, document)}", "fix the keys named above") from None
    project = Project(params, root=path.resolve().parent, params_path=path)
    for name in params.datasets:
        project.for_dataset(name)  # a bad per-dataset override fails now, before any work
    check_sources_apart(project)
    return project


def check_sources_apart(project: Project) -> None:
    """Refuse a layout in which dlpipe could write into a dataset's source, or read its own outputs as data.

    Every artifact goes under ``<data_dir>/<dataset>/``. A source (its folder, its file, or the folder
    of a targets CSV, which is read whole) may not hold ``data_dir`` and may not overlap any
    dataset's artifact folder; ``data_dir`` may not be a filesystem root. A source elsewhere under
    ``data_dir`` (the demo's ``data/sample/``) is allowed: no stage writes there.

    Raises:
        ConfigError: naming the dataset, its source and the folder it collides with.
    """
    data_dir = project.data_dir.resolve()
    if data_dir == Path(data_dir.anchor):
        raise ConfigError(f"base.data_dir is a filesystem root ({data_dir})", "set base.data_dir to a folder of its own, e.g. data")
    outputs = {name: project.dataset_dir(name).resolve() for name in project.params.datasets}
    for name, spec in project.params.datasets.items():
        where = f"datasets.{dataset_kind(spec)}.{name}"
        source = project.resolve(spec.source).resolve()
        # A targets CSV's folder is read whole (to report images with no row); any other file source is read alone.
        read = source.parent if spec.task != "classification" else source
        if data_dir == read or data_dir.is_relative_to(read):
            raise ConfigError(
                f"{where}.source ({source}) holds base.data_dir ({data_dir}): artifacts would be written among its files",
                "put base.data_dir outside the source folder",
            )
        for other, folder in outputs.items():
            if read == folder or read.is_relative_to(folder) or folder.is_relative_to(read):
                raise ConfigError(
                    f"{where}.source ({source}) overlaps {folder}, where dlpipe writes the artifacts of dataset '{other}'",
                    "move the source out of base.data_dir, or rename the dataset",
                )
