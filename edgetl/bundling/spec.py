"""What a bundle says about its model (model.json) and the test vectors its clients check themselves against.

model.json is the contract a deployment must honour, taken from the run's manifest (the preprocessing
training used) and from the model file itself (tensor names, shapes, dtypes, int8 scales). The test
vectors are real validation images; their expected outputs are the model file's own, run in its runtime
on edgetl's preprocessing (edgetl/data/pipeline.py), one image at a time, as the clients run them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.artifacts.manifest import MANIFEST_NAME, Manifest, sha256_of
from edgetl.errors import InputError

SPEC_SCHEMA = "edgetl.bundle.model"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DECODE = ("8-bit RGB as TensorFlow's decode_image(channels=3) gives it: grayscale expanded to 3 channels, "
          "alpha dropped (not blended), 16-bit samples cut to 8 bits, a GIF's first frame; a JPEG turned "
          "upright by its EXIF orientation. Training decoded JPEGs with libjpeg's fast integer IDCT; most "
          "decoders (Pillow, Android, iOS) use the accurate one, so JPEG pixels differ by about one level on "
          "average, a few at most, which can change the scores of a model sensitive to such noise. The test "
          "vectors are PNG: exact for every client.")


def model_spec(model_path: Path, manifest: Manifest, run: Any, artifact: Path) -> dict[str, Any]:
    """model.json: input and output tensors as the file declares them, preprocessing as training did it."""
    from edgetl.version import __version__
    from edgetl.data.pipeline import RESIZE_METHOD
    from edgetl.targets import open_session

    kind = manifest.sections["artifact"]
    backbone = run.manifest.sections["backbone"]
    pre = run.preprocessing
    nchw = bool(manifest.options.get("nchw"))
    session = open_session(model_path)
    size = run.image_size
    low, high = pre.input_range
    return {
        "schema": SPEC_SCHEMA, "schema_version": 1,
        "model_file": model_path.name, "format": kind["format"], "quantize": kind["quantize"],
        "variant": kind["variant"], "runtime": session.runtime,
        "input": tensor_spec(session.inputs[0], [1, 3, size, size] if nchw else [1, size, size, 3])
        | {"layout": "NCHW" if nchw else "NHWC"},
        "output": tensor_spec(session.outputs[0], [1, len(run.labels)]) | {
            "meaning": "softmax probabilities (they sum to 1) of the classes in labels.txt, in its line order",
            "labels_file": "labels.txt", "classes": len(run.labels)},
        "preprocessing": {
            "decode": DECODE, "channel_order": "RGB", "pixel_range": [0, 255],
            "resize": {"method": backbone.get("resize", RESIZE_METHOD), "height": size, "width": size,
                       "half_pixel_centers": True, "antialias": False, "keep_aspect_ratio": False, "crop": "none",
                       "as": "tf.image.resize(images, [height, width], method='bilinear'), float32 output"},
            "normalization": {
                "formula": "(pixel - mean) / std, per RGB channel",
                "mean": [float(v) for v in pre.mean], "std": [float(v) for v in pre.std],
                "scale": [1.0 / v for v in pre.std], "offset": [-m / s for m, s in zip(pre.mean, pre.std)],
                "scale_offset_formula": "pixel * scale + offset (the same values, for APIs that take these)"},
            "value_range": [float(low), float(high)], "dtype": "float32",
            "then": ("quantize to the input dtype: q = clip(round_half_even(x / scale + zero_point))"
                     if session.inputs[0].scale else "feed as float32")},
        "runtime_settings": runtime_settings(artifact, run),
        "lineage": {
            "artifact": {"path": str(artifact.resolve()), "manifest_sha256": sha256_of(artifact / MANIFEST_NAME)},
            "run": {"path": str(run.path.resolve()), "manifest_sha256": sha256_of(run.path / MANIFEST_NAME)},
            "backbone": {k: backbone[k] for k in ("name", "alpha", "image_size") if k in backbone},
            "head": run.manifest.options.get("head", "linear"),
            "edgetl_version": __version__},
    }


def runtime_settings(artifact: Path, run: Any) -> dict[str, Any]:
    """The thread count the run's latest recommendation of this artifact measured best (compress's report,
    else bench's), so a client uses it by default; none on record: the runtime's default."""
    for report_path in (run.path / "compress" / "report.json", run.path / "bench" / "report.json"):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for target, chosen in (report.get("recommendations") or {}).items():
            if chosen and chosen.get("path") and Path(chosen["path"]).parent.resolve() == artifact.resolve() \
                    and chosen.get("threads"):
                return {"threads": chosen["threads"], "target": target, "p50_ms": chosen.get("p50_ms"),
                        "advice": chosen.get("thread_advice"), "source": str(report_path.resolve())}
    return {"threads": None, "advice": "no recommendation of this file on record: the runtime's default thread "
                                       "count (time it with `edgetl bench`)"}


def tensor_spec(info: Any, shape: list[int]) -> dict[str, Any]:
    quantization = {"scale": info.scale, "zero_point": info.zero_point} if info.scale else None
    return {"name": info.name, "shape": shape, "model_shape": [d if d else None for d in info.shape],
            "dtype": info.dtype, "quantization": quantization}


def write_vectors(run: Any, count: int, seed: int, folder: Path) -> list[dict[str, Any]]:
    """Copy `count` validation images (stratified by class) into `folder` as 00.png, 01.png, ...

    8-bit PNGs are copied byte for byte; other files (JPEG, BMP, GIF, 16-bit PNG) are stored as PNGs of
    the pixels edgetl decodes from them, so every client's decoder sees exactly what training saw."""
    from edgetl.data.pipeline import decode_file
    from edgetl.tf_env import tf

    paths, labels = run.sample("val", count, seed)
    if not paths:
        raise InputError(f"{run.path}: the validation split is empty; a bundle's test vectors are validation images")
    folder.mkdir(parents=True, exist_ok=True)
    vectors = []
    for i, (source, label) in enumerate(zip(paths, labels)):
        name = f"{i:02d}.png"
        if _is_8bit_png(Path(source)):
            (folder / name).write_bytes(Path(source).read_bytes())
            stored = "copied"
        else:
            (folder / name).write_bytes(tf().io.encode_png(decode_file(source)).numpy())
            stored = "stored as PNG: the pixels edgetl decodes from the source"
        vectors.append({"file": name, "source": source, "label": run.labels[label], "stored": stored})
    return vectors


def _is_8bit_png(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) == 26 and head[24] == 8


def expected_outputs(model_path: Path, spec: dict[str, Any], run: Any, folder: Path,
                     vectors: list[dict[str, Any]], runtime: str | None = None) -> dict[str, Any]:
    """The model file's outputs on each vector: edgetl's preprocessing, the file's runtime (or `runtime`), batch 1."""
    from edgetl.artifacts.run_dir import load_images
    from edgetl.targets import open_session

    images = load_images([str(folder / v["file"]) for v in vectors], run.image_size, run.preprocessing)
    session = open_session(model_path, runtime)
    out_q = spec["output"]["quantization"]
    rows = []
    for vector, image in zip(vectors, images):
        feed = image.transpose(2, 0, 1)[None] if spec["input"]["layout"] == "NCHW" else image[None]
        probabilities = np.asarray(session.predict(np.ascontiguousarray(feed)), np.float32).reshape(-1)
        top = int(np.argmax(probabilities))
        row = vector | {"top1": run.labels[top], "top1_index": top,
                        "probabilities": [float(p) for p in probabilities],
                        "input_mean": float(image.mean()), "input_std": float(image.std())}
        if out_q:  # the integers the model wrote: probabilities are exactly (raw - zero_point) * scale
            raw = np.round(probabilities / np.float32(out_q["scale"]) + out_q["zero_point"])
            row["raw_output"] = [int(v) for v in raw]
        rows.append(row)
    return {"computed_by": (f"edgetl's preprocessing (TensorFlow decode, tf.image.resize bilinear, (x - mean) / std), "
                            f"then {model_path.name} in {session.runtime}, one image at a time"),
            "vectors": rows}
