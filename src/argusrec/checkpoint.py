"""Checkpoints: save, find and load a model, with everything needed to use it elsewhere.

STYLE.md principle 11: a checkpoint describes itself. ``checkpoints/step-NNNNNNNN/`` holds

    model.safetensors   the weights (consolidated format), or
    shards/             the weights and the optimizer's tensors as torch.distributed.checkpoint
                        (DCP) shards, one file per rank, written without gathering (sharded
                        format, for state too large for one host: :func:`save_sharded_checkpoint`)
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
``checkpoints/best`` name one. A sharded checkpoint loads on any number of ranks (each reads the
slices its shards cover) and into a single process (:meth:`Checkpoint.weights`); DCP keeps its
index as a pickle, which is read here by an unpickler that can build DCP's metadata and nothing
else, and only tensors are ever read from the shards.

Later stages (evaluate, export, serve, rank) open checkpoints here, never through the trainer.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata

from argusrec import __version__
from argusrec.errors import DataError
from argusrec.model import ArgusModel, DataSpec, ModelConfig
from argusrec.sequences import PreparedData
from argusrec.atomic import sha256_file
from argusrec.treefile import load_tree, save_tree
from argusrec.vocab import Vocabulary, adapt_state, link_or_copy

CHECKPOINT_VERSION = 2
SHARDED_VERSION = 3  # a consolidated checkpoint stays version 2, which older readers read
READABLE_VERSIONS = (1, 2, 3)  # version 1: no vocab/; the dataset it names must still exist
VOCAB = "vocab"
STATE = Path("state")  # state.json + state.safetensors
SHARDS = "shards"  # DCP: __RANK_0.distcp per rank and .metadata, its index
Format = Literal["consolidated", "sharded"]
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
    tmp = _fresh_dir(out, step, f"tmp-{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()},
              str(tmp / "model.safetensors"))
    return _publish(out, tmp, step=step, state=state, configs=configs, data=data, keep=keep,
                    weights="consolidated")


def save_sharded_checkpoint(out: Path, *, step: int, tensors: dict[str, torch.Tensor],
                            state: dict[str, Any], configs: dict[str, dict],
                            data: PreparedData, keep: int) -> Path:
    """:func:`save_checkpoint` in the sharded format: a collective, which every rank calls with
    its own shards (``tensors``: argusrec.parallel.sharded_state, model and optimizer) and
    writes them itself; nothing is gathered. Rank 0 writes the rest (``state``: what `--resume`
    needs besides the tensors, the optimizer's param groups among it), then renames."""
    main = not dist.is_initialized() or dist.get_rank() == 0
    tmp = _fresh_dir(out, step, "tmp-shards") if main else _tmp_dir(out, step, "tmp-shards")
    _barrier()  # nobody writes shards before rank 0 cleared the directory
    with _one_process_meant():
        dcp.save(tensors, storage_writer=FileSystemWriter(tmp / SHARDS),
                 no_dist=not dist.is_initialized())
    final = (_publish(out, tmp, step=step, state=state, configs=configs, data=data, keep=keep,
                      weights="sharded") if main else out / "checkpoints" / f"step-{step:08d}")
    _barrier()  # the checkpoint exists for every rank once this returns
    return final


def _tmp_dir(out: Path, step: int, suffix: str) -> Path:
    return out / "checkpoints" / f".step-{step:08d}.{suffix}"


def _fresh_dir(out: Path, step: int, suffix: str) -> Path:
    """An empty temporary directory for checkpoint ``step`` (a leftover one is cleared)."""
    tmp = _tmp_dir(out, step, suffix)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _publish(out: Path, tmp: Path, *, step: int, state: dict[str, Any],
             configs: dict[str, dict], data: PreparedData, keep: int, weights: Format) -> Path:
    """Complete the checkpoint in ``tmp`` (which holds its weights) with the resume state,
    checksums, config and vocabulary; rename it to ``step-N``, point ``latest`` at it and
    prune the old ones."""
    root = tmp.parent
    vocab = run_vocabulary(out, data)
    save_tree({**state, "step": step}, tmp / STATE)
    files = {p.relative_to(tmp).as_posix(): sha256_file(p)
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    version = SHARDED_VERSION if weights == "sharded" else CHECKPOINT_VERSION
    (tmp / "config.json").write_text(json.dumps({
        "format_version": version, "argusrec_version": __version__, "step": step,
        "weights": weights, **configs,
        "data": {"path": str(data.path.resolve()), "meta": data.meta}, "files": files},
        indent=2) + "\n")
    link_or_copy(vocab, tmp / VOCAB)
    for path in tmp.rglob("*"):  # other users of a shared run directory can read it
        path.chmod(0o755 if path.is_dir() else 0o644)
    final = root / f"step-{step:08d}"
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


@contextmanager
def _one_process_meant():
    """DCP warns whenever it saves or loads in one process; here that is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def checkpoint_format(requested: str, *, fsdp: bool, state_bytes: int,
                      memory: int | None = None) -> Format:
    """The format a run saves in: ``requested``, unless it is "auto": then sharded only for
    an FSDP run whose model and optimizer state (``state_bytes``) would take more than half of
    one host's memory (``memory``, default this host's) gathered on it, else consolidated."""
    if requested != "auto":
        return requested
    memory = host_memory() if memory is None else memory
    return "sharded" if fsdp and state_bytes > memory // 2 else "consolidated"


def host_memory() -> int:
    """This host's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


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
        if (candidate / "model.safetensors").exists() or (candidate / SHARDS).is_dir():
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

    @property
    def sharded(self) -> bool:
        """Whether its weights are DCP shards (else one model.safetensors)."""
        return self.config.get("weights") == "sharded"

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's full state dict on CPU, in this process alone (a sharded checkpoint's
        shards are read into tensors of the sizes its index gives)."""
        if not self.sharded:
            return load_file(str(self.path / "model.safetensors"))
        index = _read_index(self.path / SHARDS)
        tensors = {key: torch.empty(meta.size, dtype=meta.properties.dtype)
                   for key, meta in index.items()
                   if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)}
        self._load_shards(tensors, index, alone=True)
        return {key.removeprefix("model."): value for key, value in tensors.items()}

    def read_shards(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fill ``tensors`` (flat names, argusrec.parallel.sharded_state) in place from a
        sharded checkpoint, whatever world size wrote it: a DTensor gets the slice its shard
        covers, any other tensor the whole. Returns the ones it holds: an optimizer slot it
        lacks is left out (that parameter had no state yet). A collective when distributed."""
        index = _read_index(self.path / SHARDS)
        held = {key: value for key, value in tensors.items()
                if key in index or not key.startswith("optim.")}
        self._load_shards(held, index, alone=False)
        return held

    def _load_shards(self, tensors: dict[str, torch.Tensor], index: dict, *,
                     alone: bool) -> None:
        """dcp.load, after checking that the index holds every one of ``tensors`` as a tensor
        of its size (DCP would unpickle an entry its index calls bytes)."""
        wrong = [key for key, value in tensors.items()
                 if not isinstance(index.get(key), TensorStorageMetadata)
                 or tuple(index[key].size) != tuple(value.shape)]
        if wrong:
            raise DataError(f"the checkpoint's shards do not hold {len(wrong)} of the tensors "
                            f"this model has, or hold them in other sizes ({', '.join(wrong[:3])}"
                            f"{' ...' if len(wrong) > 3 else ''})", path=self.path,
                            fix="resume or load it with the architecture it was trained with")
        with _one_process_meant():
            dcp.load(tensors, storage_reader=_ShardReader(self.path / SHARDS),
                     no_dist=alone or not dist.is_initialized())

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


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata classes, dtypes and paths, and refuses any other global: a
    crafted ``.metadata`` cannot run code."""

    ALLOWED = {
        "torch.distributed.checkpoint.metadata": {
            "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "TensorProperties",
            "ChunkStorageMetadata", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING"},
        "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
        "torch.serialization": {"_get_layout"},
        "torch": {"Size"},
        "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    }

    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if dtype or name in self.ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a checkpoint's index")


class _ShardReader(FileSystemReader):
    """DCP's file reader with its index read by :class:`_MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        with open(Path(self.path) / ".metadata", "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError("the index is not DCP metadata")
        metadata.storage_meta = metadata.storage_meta or StorageMeta()  # as DCP's own reader
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _read_index(shards: Path) -> dict:
    """Flat name -> DCP storage metadata (tensor: size and dtype) of a sharded checkpoint."""
    try:
        return _ShardReader(shards).read_metadata().state_dict_metadata
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError) as e:
        raise DataError(f"the index of the checkpoint's shards cannot be read: {e}",
                        path=shards, fix="resume from an earlier checkpoint") from None


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
