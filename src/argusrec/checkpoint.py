"""Checkpoints: save, find and load a model, with everything needed to use it elsewhere.

STYLE.md principle 11: a checkpoint describes itself. ``checkpoints/step-NNNNNNNN/`` holds

    model.safetensors   the weights
    state.json          optimizer, scheduler, RNG and data position (only `--resume` reads
    state.safetensors   them), in JSON and safetensors: no pickle is ever loaded (treefile)
    config.json         format version, the resolved config of every stage that produced it
                        (``train``, ``model``, and ``finetune`` for a fine-tuned model), and the
                        data's metadata and where it was
    vocab/              the vocabulary it was trained with (argusrec.vocab): item and user ids,
                        context values, event types, feedback signals, item content vectors

so a run can be moved, and evaluated, exported and served on a newer dataset without the one it
was trained on. The vocabulary is written once per run (``OUT/vocab``) and hard-linked into each
checkpoint. Checkpoints are written to a temporary name and renamed; ``checkpoints/latest`` and
``checkpoints/best`` name one.

Later stages (evaluate, export, serve, rank) open checkpoints here, never through the trainer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from argusrec import __version__
from argusrec.errors import DataError
from argusrec.model import ArgusModel, DataSpec, ModelConfig
from argusrec.sequences import PreparedData
from argusrec.atomic import sha256_file
from argusrec.treefile import load_tree, save_tree
from argusrec.vocab import Vocabulary, adapt_state, link_or_copy

CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no vocab/; the dataset it names must still exist
VOCAB = "vocab"
STATE = Path("state")  # state.json + state.safetensors
log = logging.getLogger(__name__)


def run_vocabulary(out: Path, data: PreparedData) -> Path:
    """``out/vocab``: the vocabulary of ``data`` with its users, written once per run."""
    directory = out / VOCAB
    if not (directory / "fields.json").exists():
        tmp = out / f".{VOCAB}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        Vocabulary.of_data(data, users=True).save(tmp)
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
    return directory


def save_checkpoint(out: Path, *, step: int, weights: dict[str, torch.Tensor],
                    state: dict[str, Any], configs: dict[str, dict], data: PreparedData,
                    keep: int) -> Path:
    """Write ``out/checkpoints/step-N`` atomically and point ``checkpoints/latest`` at it.

    ``weights`` the model's full state dict; ``state`` what `--resume` needs (optimizer,
    scheduler, RNG, position); ``configs`` stage name -> resolved config (train, model,
    finetune). The newest ``keep`` checkpoints stay, and the one ``best`` names."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    vocab = run_vocabulary(out, data)
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()},
              str(tmp / "model.safetensors"))
    save_tree({**state, "step": step}, tmp / STATE)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
    (tmp / "config.json").write_text(json.dumps({
        "format_version": CHECKPOINT_VERSION, "argusrec_version": __version__, "step": step,
        **configs, "data": {"path": str(data.path.resolve()), "meta": data.meta},
        "files": files}, indent=2) + "\n")
    link_or_copy(vocab, tmp / VOCAB)
    for path in tmp.rglob("*"):  # other users of a shared run directory can read it
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    pointer = root / f".latest.tmp-{os.getpid()}"
    pointer.write_text(final.name + "\n")
    pointer.replace(root / "latest")
    best = (root / "best").read_text().split()[0] if (root / "best").exists() else None
    for old in sorted(root.glob("step-*"))[:-keep]:
        if old.name != best:
            shutil.rmtree(old, ignore_errors=True)
    return final


def mark_best(out: Path, checkpoint: Path, metric: str, value: float) -> None:
    """Point checkpoints/best at ``checkpoint`` (atomically), recording the metric."""
    pointer = out / "checkpoints" / f".best.tmp-{os.getpid()}"
    pointer.write_text(f"{checkpoint.name} {metric} {value:.6f}\n")
    pointer.replace(out / "checkpoints" / "best")


def find_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """A checkpoint directory from itself, a run directory, or a checkpoints directory;
    ``which`` picks the run's latest or best (by validation) checkpoint."""
    p = Path(path)
    for candidate in (p, p / "checkpoints"):
        if (candidate / "model.safetensors").exists():
            return candidate
        if (candidate / which).exists():
            return candidate / (candidate / which).read_text().split()[0]
    raise DataError(f"no {which} checkpoint here", path=p,
                    fix="pass a run directory written by `argus pretrain` or `argus finetune`, "
                        "or one of its checkpoints/step-N directories")


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint directory: its config and vocabulary (weights load on demand)."""

    path: Path
    config: dict

    @classmethod
    def open(cls, path: str | Path, which: str = "latest") -> "Checkpoint":
        ckpt = find_checkpoint(path, which).resolve()
        config = json.loads((ckpt / "config.json").read_text())
        if config.get("format_version") not in READABLE_VERSIONS:
            raise DataError(f"checkpoint format {config.get('format_version')} is not one of "
                            f"{READABLE_VERSIONS}", path=ckpt,
                            fix="retrain with this version of argusrec")
        return cls(ckpt, config)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.config["model"])

    @property
    def finetune(self) -> dict | None:
        """The fine-tuning config that produced it (None for a pretrained model)."""
        return self.config.get("finetune")

    @property
    def data_path(self) -> Path:
        """Where the dataset it was trained on was (it may have moved since)."""
        return Path(self.config["data"]["path"])

    def vocabulary(self) -> Vocabulary:
        if (self.path / VOCAB).exists():
            return Vocabulary.load(self.path / VOCAB)
        return Vocabulary.of_data(self.training_data())  # format 1

    def training_data(self) -> PreparedData:
        """The dataset it was trained on, where it still is."""
        if not (self.data_path / "meta.json").exists():
            raise DataError("the dataset this model was trained on is not there any more",
                            path=self.data_path, fix="pass the prepared dataset to use with "
                            "--data (a newer one is fine: new items and users get vectors)")
        return PreparedData(self.data_path)

    def weights(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "model.safetensors"))

    def problems(self) -> list[str]:
        """What is wrong with its files against the checksums in config.json (empty: intact;
        checkpoints written before checksums are only checked for presence)."""
        expected = self.config.get("files") or {"model.safetensors": None}
        out = []
        for name, digest in expected.items():
            path = self.path / name
            if not path.exists():
                out.append(f"{name} is missing")
            elif digest is not None and sha256_file(path) != digest:
                out.append(f"{name} does not match its checksum")
        return out

    @classmethod
    def newest_intact(cls, run: str | Path) -> "Checkpoint":
        """The newest checkpoint of ``run`` whose files match their checksums. A damaged newer
        one (truncated, empty, missing files, a dangling ``latest``) is passed over with a
        warning, so an interrupted write never costs more than the steps since the previous
        checkpoint."""
        root = Path(run) / "checkpoints"
        candidates = sorted(root.glob("step-*"), reverse=True)
        pointer = root / "latest"
        if pointer.exists():
            named = root / pointer.read_text().strip()
            candidates = [named] + [c for c in candidates if c != named]
        skipped = []
        for path in candidates:
            try:
                ckpt = cls.open(path)
                if problems := ckpt.problems():
                    raise DataError("; ".join(problems), path=path)
            except (DataError, OSError, ValueError) as e:
                reason = e.problem if isinstance(e, DataError) else str(e)
                skipped.append(f"{path.name}: {reason}")
                continue
            if skipped:
                log.warning("passed over damaged checkpoints (%s); resuming from %s",
                            "; ".join(skipped), path.name)
            return ckpt
        raise DataError("no intact checkpoint to resume from"
                        + (f" ({'; '.join(skipped)})" if skipped else ""), path=run,
                        fix="start the run again (or from another run with --init-from)")

    def resume_state(self) -> dict[str, Any]:
        """What `--resume` needs: optimizer, scheduler, RNG states, step and data position."""
        if not (self.path / STATE.with_suffix(".json")).exists():
            raise DataError("this checkpoint has no resume state in a safe format (an older "
                            "version wrote it as a pickle, which argusrec never loads)",
                            path=self.path, fix="start a new run from its weights with "
                            "--init-from instead of --resume")
        return load_tree(self.path / STATE)

    def load_model(self, vocab: Vocabulary | None = None) -> ArgusModel:
        """The model on CPU in eval mode, for ``vocab`` (default: its own)."""
        own = self.vocabulary()
        target = vocab if vocab is not None else own
        model = ArgusModel(self.model_config, DataSpec.from_vocabulary(target))
        state = self.weights()
        if target is not own and not _same(own, target):
            state = adapt_state(state, own, target, model)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            raise DataError("the checkpoint's weights do not fit this data: "
                            + " ".join(lines[1:3] or lines[:1])[:400], path=self.path,
                            fix="use the dataset the model was trained on, or a newer one of "
                                "the same log (argus prepare --base)") from None
        return model.eval()


def _same(a: Vocabulary, b: Vocabulary) -> bool:
    return (a.items.dtype == b.items.dtype and a.items.equals(b.items)
            and a.context == b.context and a.event_types == b.event_types
            and list(a.feedback) == list(b.feedback))


def load_model(path: str | Path, data: PreparedData | str | Path | None = None, *,
               device: str | torch.device = "cpu", which: str = "latest",
               vocab: Vocabulary | None = None
               ) -> tuple[ArgusModel, dict, PreparedData | None]:
    """(model, checkpoint config, data) from a run or checkpoint.

    The model is built for ``vocab``, else for ``data``'s vocabulary, else for the dataset it
    was trained on where that still exists (which is then returned as ``data``), else for the
    vocabulary the checkpoint carries (``data`` is then None). Weights follow a newer
    vocabulary by original id (argusrec.vocab)."""
    ckpt = Checkpoint.open(path, which)
    if isinstance(data, (str, Path)):
        data = PreparedData(data)
    if data is None and vocab is None and (ckpt.data_path / "meta.json").exists():
        data = PreparedData(ckpt.data_path)
    if vocab is None and data is not None:
        vocab = Vocabulary.of_data(data)
    model = ckpt.load_model(vocab)
    return model.to(device), ckpt.config, data


def need_data(data: PreparedData | None, ckpt_config: dict, what: str) -> PreparedData:
    """``data``, or a clear error when the run's dataset has moved and none was given."""
    if data is not None:
        return data
    raise DataError(f"{what} needs the prepared dataset, and the one this model was trained "
                    "on is not there any more", path=ckpt_config["data"]["path"],
                    fix="pass it (or a newer one) with --data")
