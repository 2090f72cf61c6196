"""The sidecar JSON of an exported model: what a deployment needs to feed it and read it,
and where it came from (checkpoint, metrics, package versions)."""

from __future__ import annotations

import csv
import hashlib
import json
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import Tensor

from dsrelu_lightning.cli.config_compare import run_config
from dsrelu_lightning.cli.evaluation import evaluation_dir, run_dir
from dsrelu_lightning.nn.activations import DSReLU, dsrelu_modules
from dsrelu_lightning.nn.frozen import frozen_slope
from dsrelu_lightning.training.module import Classifier

__all__ = ["activation_record", "checkpoint_metrics", "package_versions", "sidecar"]

PACKAGES = ("dsrelu_lightning", "torch", "torchvision", "lightning")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def package_versions(format_name: str) -> dict[str, str | None]:
    """Python's and the installed versions of the packages that made the file (None where
    one is not installed)."""
    names = PACKAGES + (ONNX_PACKAGES if format_name == "onnx" else ())
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def activation_record(model: Classifier) -> dict[str, Any]:
    """The activation as trained and, for DSReLU, its slope at export (one value, or one per
    layer where a schedule gave them different slopes)."""
    hparams = model.hparams
    record: dict[str, Any] = {
        "name": hparams.get("activation", "dsrelu"),
        "args": hparams.get("activation_args") or {},
    }
    layers = dsrelu_modules(model)
    if not layers:
        return record
    first: DSReLU = layers[0]
    slopes = {
        name: module.slope
        for name, module in model.model.named_modules()
        if isinstance(module, DSReLU)
    }
    progress = {float(module.progress) for module in layers}
    record |= {
        "layers": len(layers),
        "initial_angle": first.initial_angle,
        "final_angle": first.final_angle,
        "steepness": first.steepness,
        "negative_slope": first.negative_slope,
        "progress": progress.pop() if len(progress) == 1 else None,
    }
    if len(set(slopes.values())) == 1:
        record["slope_at_export"] = first.slope
        record["frozen_slope_float32"] = frozen_slope(first)
    else:
        record["slopes_at_export"] = slopes
    return record


def _epoch_row(rows: list[Mapping[str, Any]], epoch: int) -> dict[str, float] | None:
    row = next((r for r in rows if int(float(r.get("epoch", -1))) == epoch), None)
    return None if row is None else {k: float(v) for k, v in row.items() if v not in ("", None)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_metrics(checkpoint: Path, content: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of the checkpoint's epoch, saying where they were found: the
    MetricsHistory state inside the checkpoint, else the run's ``epoch_metrics.csv``; plus
    the ModelCheckpoint's monitored score and any ``validate``/``test`` results of it."""
    epoch = int(content.get("epoch", -1))
    states = content.get("callbacks") or {}
    step = content.get("global_step")
    found: dict[str, Any] = {"sha256": _sha256(checkpoint), "epoch": epoch, "global_step": step}
    rows = (states.get("MetricsHistory") or {}).get("rows")
    row = _epoch_row(rows, epoch) if rows else None
    if row is not None:
        found |= {
            "epoch_metrics": row,
            "source": f"MetricsHistory in the checkpoint, epoch {epoch}",
        }
    else:
        table = run_dir(checkpoint) / "epoch_metrics.csv"
        if table.is_file():
            with table.open(newline="") as handle:
                row = _epoch_row(list(csv.DictReader(handle)), epoch)
        source = f"{table}, epoch {epoch}" if row is not None else "none recorded for the epoch"
        found |= {"epoch_metrics": row, "source": source}
    if row is not None:
        if row.pop("step", None) not in (None, float(step if step is not None else -1)):
            found["note"] = "the checkpoint was saved during the epoch; the row is the epoch's end"
        row.pop("epoch", None)
    for key, state in states.items():
        if (
            str(key).startswith("ModelCheckpoint")
            and isinstance(state, dict)
            and state.get("monitor")
        ):
            best = state.get("best_model_score")
            found["monitor"] = {
                "metric": state["monitor"],
                "best_score": None if best is None else float(best),
                "best_model_path": state.get("best_model_path"),
            }
            break
    for stage in ("validate", "test"):
        path = evaluation_dir(checkpoint) / f"{stage}_metrics.json"
        if path.is_file():
            found[f"{stage}_metrics"] = {"source": str(path), **json.loads(path.read_text())}
    return found


def sidecar(
    *,
    format_name: str,
    file: Path,
    checkpoint: Path,
    content: Mapping[str, Any],
    model: Classifier,
    inputs: Tensor,
    data: Any,
    check: dict[str, Any],
    graph: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    """Everything the sidecar JSON holds, as a JSON-ready mapping."""
    hparams = model.hparams
    saved = run_config(checkpoint) or {}
    precise_bn = (saved.get("precise_bn") or {}).get("enabled")
    classes = list(getattr(data, "class_names", None) or range(model.num_classes))
    describe = getattr(data, "input_preprocessing", None)
    preprocessing = describe() if describe is not None else {"formula": "not described"}
    return {
        "format": format_name,
        "file": file.name,
        "input": {
            "name": "input" if format_name == "onnx" else None,
            "shape": [None, *inputs.shape[1:]],
            "dtype": "float32",
            "batch": "dynamic (any size from 1)",
            "preprocessing": preprocessing,
        },
        "output": {
            "name": "logits" if format_name == "onnx" else None,
            "shape": [None, model.num_classes],
            "meaning": "class logits; softmax gives the probabilities",
        },
        "classes": [str(c) for c in classes],
        "backbone": {
            "name": hparams.get("backbone", "resnet34"),
            "args": hparams.get("backbone_args") or {},
            "stem": hparams.get("stem"),
            "in_channels": hparams.get("in_channels"),
            "description": model.description,
        },
        "activation": activation_record(model),
        "batchnorm_statistics": {
            True: "recalibrated (precise BN on)",
            False: "running averages (precise BN off)",
        }.get(precise_bn, "as saved (the run's config.yaml not found)"),
        "checkpoint": {"path": str(checkpoint), **checkpoint_metrics(checkpoint, content)},
        "data": {
            "class_path": f"{type(data).__module__}.{type(data).__qualname__}",
            "fold_index": getattr(data, "fold_index", None),
        },
        "check": check,
        "onnx": graph,
        "export_seconds": round(seconds, 3),
        "versions": package_versions(format_name),
    }
