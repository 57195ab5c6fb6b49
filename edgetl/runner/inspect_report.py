"""`edgetl inspect`: a model file or artifact directory, summarized for people and for scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.artifacts.inspection import inspect_model
from edgetl.artifacts.manifest import MANIFEST_NAME, read_manifest
from edgetl.errors import InputError

MODEL_SUFFIXES = (".tflite", ".onnx")


def inspect_path(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    lineage = None
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists():
            raise InputError(f"{path}: a directory without {MANIFEST_NAME}; give a .tflite/.onnx file or an artifact")
        manifest = read_manifest(path)  # verifies the files' hashes first
        models = [name for name in manifest.files if name.endswith(MODEL_SUFFIXES)]
        if not models:
            raise InputError(f"{path}: this edgetl {manifest.kind} holds no .tflite/.onnx file")
        lineage = {"parent": manifest.parent, "options": manifest.options, "verification": manifest.metrics}
        path = path / models[0]
    report = inspect_model(path)
    report.pop("ops")
    report.pop("initializers", None)
    report["lineage"] = lineage
    return report


def _tensor_line(t: dict[str, Any]) -> str:
    quant = f" scale={t['scale']:.4g} zero_point={t['zero_point']}" if isinstance(t.get("scale"), float) else ""
    return f"  {t['name']}: {t['dtype']} {t['shape']}{quant}"


def render_text(report: dict[str, Any]) -> str:
    lines = [f"{report['path']}", f"format: {report['format']}  size: {report['bytes']:,} bytes"]
    if report.get("opset"):
        lines.append(f"opset: {report['opset']}  producer: {report['producer']}")
    lines += ["inputs:"] + [_tensor_line(t) for t in report["inputs"]]
    lines += ["outputs:"] + [_tensor_line(t) for t in report["outputs"]]
    ops = sorted(report["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines.append("ops: " + ", ".join(f"{name}×{count}" for name, count in ops))
    dtypes = report.get("tensor_dtypes") or report.get("initializer_dtypes") or {}
    lines.append(("tensor dtypes: " if "tensor_dtypes" in report else "weight dtypes: ")
                 + ", ".join(f"{k} {v}" for k, v in sorted(dtypes.items())))
    lines += _metadata_lines(report)
    if report["lineage"]:
        parent = report["lineage"]["parent"] or {}
        lines.append(f"lineage: from {parent.get('path')} (manifest sha256 {str(parent.get('manifest_sha256'))[:12]}…)")
        numbers = report["lineage"]["verification"]
        if "top1_agreement" in numbers:
            lines.append(f"verified: top-1 agreement {numbers['top1_agreement']:.4f} on {numbers['images']} images, "
                         f"accuracy {numbers['accuracy']:.4f} (Keras {numbers['reference_accuracy']:.4f})")
    return "\n".join(lines)


def _metadata_lines(report: dict[str, Any]) -> list[str]:
    meta = report.get("metadata") or {}
    if report["format"] == "onnx":
        return [f"metadata: {', '.join(sorted(meta)) or 'none'}"]
    tflite = meta.get("tflite_metadata")
    if not tflite:
        return [f"metadata: {', '.join(meta.get('entries', [])) or 'none'} (no TFLite Metadata)"]
    labels = tflite.get("labels") or []
    return [f"metadata: {tflite.get('name')} v{tflite.get('version')}; normalization mean {tflite.get('mean')} "
            f"std {tflite.get('std')}; {len(labels)} labels ({', '.join(labels[:5])}{'…' if len(labels) > 5 else ''})"]
