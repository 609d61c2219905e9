"""gensim Word2Vec training from a tokenised corpus file, in a process with a fixed PYTHONHASHSEED.

gensim's documentation asks for ``workers=1``, a fixed ``seed`` *and* a fixed
``PYTHONHASHSEED`` for identical vectors from run to run: the seed of Python's
string hashing is read once, when an interpreter starts, so it cannot be set
from inside a running process. :func:`train_isolated` therefore trains in this
process only when it already runs with the wanted hash seed, and otherwise in
a child (``python -m dlpipe.text.training``) started with it set. A seeded
``hashfxn`` was the alternative; it was not taken because gensim pickles that
function into the saved model, which would then load only where dlpipe is
installed. (gensim 4.4 draws its initial vectors from ``numpy`` seeded by
``seed`` and no longer hashes words, so the fixed hash seed guards against
older or future versions and the standard library rather than today's code.)

Per-epoch loss: gensim's tally (``get_latest_training_loss``) is a float32 sum
that only ever grows within one ``train()`` call; near 2**24 it stops
counting small losses and it freezes at 2**27 (gensim #2735). It is read and
reset to 0 at every epoch end, so each figure is one epoch's own sum. With more
than one worker thread gensim's threads overwrite one another's tallies (gensim
#2743; measured on the sample corpus: 2 workers report about half the loss of
1), in ``corpus_file`` and iterator mode alike. So the loss is computed only
with ``workers: 1``; other runs record why it is absent instead of a wrong number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlpipe.core.artifacts import atomic_write_json
from dlpipe.core.parallel import die_with_parent
from dlpipe.text.vectors import save_vectors

# float32 tallies stop counting losses of about 1 once they pass 2**24.
FLOAT32_EXACT_LIMIT = float(2**24)


@dataclass(frozen=True)
class TrainSpec:
    """What to train and where to save it; ``params`` are keyword arguments of ``gensim.models.Word2Vec``."""

    corpus_file: str
    model_path: str
    vectors_folder: str  # where vectors.npy and vocab.csv go
    params: dict[str, Any]
    hash_seed: int
    description: str


@dataclass(frozen=True)
class TrainResult:
    """What training measured. ``epoch_losses`` is empty when the loss was not computed (workers > 1)."""

    vocabulary: int
    corpus_words: int
    effective_words: int
    build_vocab_seconds: float
    train_seconds: float
    words_per_second: float
    epoch_losses: list[float] = field(default_factory=list)
    in_child_process: bool = False


def train_isolated(spec: TrainSpec) -> TrainResult:
    """Train with PYTHONHASHSEED = ``spec.hash_seed``: here when this process has it, else in a child that does.

    Raises:
        RuntimeError: the child process failed (its traceback is on stderr) or was killed.
    """
    if os.environ.get("PYTHONHASHSEED") == str(spec.hash_seed):
        return train(spec)
    folder = Path(spec.model_path).parent
    spec_path, result_path = folder / ".train_spec.json", folder / ".train_result.json"
    atomic_write_json(spec_path, asdict(spec))
    env = {**os.environ, "PYTHONHASHSEED": str(spec.hash_seed)}
    try:
        command = [sys.executable, "-m", "dlpipe.text.training", str(spec_path), str(result_path), str(os.getpid())]
        completed = subprocess.run(command, env=env, check=False)
        report = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None
    finally:
        for path in (spec_path, result_path):
            path.unlink(missing_ok=True)
    if completed.returncode != 0 or report is None:
        raise RuntimeError(f"the word2vec training process failed with exit code {completed.returncode}")
    return TrainResult(**report)


def train(spec: TrainSpec) -> TrainResult:
    """Build the vocabulary from ``spec.corpus_file``, train, and save the full model and its vectors (see save_vectors)."""
    from gensim.models import Word2Vec

    from dlpipe.core.console import progress

    model = Word2Vec(**spec.params)
    start = time.perf_counter()
    model.build_vocab(corpus_file=spec.corpus_file)
    build_seconds = time.perf_counter() - start
    compute_loss = model.workers == 1
    with progress(model.epochs, spec.description, "epochs") as advance:
        callback = _epoch_end_callback(advance, compute_loss)
        start = time.perf_counter()
        effective, _raw = model.train(
            corpus_file=spec.corpus_file,
            total_examples=model.corpus_count,
            total_words=model.corpus_total_words,
            epochs=model.epochs,
            compute_loss=compute_loss,
            callbacks=[callback],
        )
        seconds = time.perf_counter() - start
    # Run facts gensim would pickle into the model (event dates, the platform, seconds spent): kept
    # out so that a rerun writes the same bytes; the metrics hold the timings.
    model.lifecycle_events = model.wv.lifecycle_events = None
    model.total_train_time = 0.0
    model.save(spec.model_path)
    save_vectors(model.wv, Path(spec.vectors_folder))
    return TrainResult(
        vocabulary=len(model.wv),
        corpus_words=int(model.corpus_total_words),
        effective_words=int(effective),
        build_vocab_seconds=round(build_seconds, 4),
        train_seconds=round(seconds, 4),
        words_per_second=round(effective / seconds, 1) if seconds > 0 else 0.0,
        epoch_losses=callback.losses,
    )


def _epoch_end_callback(advance: Any, compute_loss: bool) -> Any:
    """A gensim callback that moves the progress bar and keeps each epoch's own loss."""
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochEnd(CallbackAny2Vec):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_epoch_end(self, model: Any) -> None:
            if compute_loss:
                self.losses.append(float(model.get_latest_training_loss()))
                model.running_training_loss = 0.0  # each epoch's tally starts from zero (see the module notes)
            advance(1)

    return EpochEnd()


def main(argv: list[str]) -> int:
    """Child-process entry: ``python -m dlpipe.text.training SPEC.json RESULT.json PARENT_PID``."""
    die_with_parent(int(argv[2]))  # a killed word2vec stage must not leave its training running
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    result = train(TrainSpec(**json.loads(spec_path.read_text(encoding="utf-8"))))
    atomic_write_json(result_path, asdict(result) | {"in_child_process": True})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
