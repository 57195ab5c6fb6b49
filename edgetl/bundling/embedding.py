"""A bundle of a prototype or siamese artifact also carries its embedding model, so an app can ask "are these
two images the same thing?" (`verify(a, b)` in the Python and Node clients) with the run's calibrated
threshold baked in, and add classes (prototypes.json).

model.json gets an `embedding` section (the file, its tensors, the scorer and thresholds); expected.json gets
`pairs`: every pair of the test vectors with the embedding file's score (edgetl's preprocessing, the file's
runtime, one image at a time) and decision, which the clients' --selftest reproduce.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.bundling.spec import tensor_spec
from edgetl.network.similarity import Scorer, normalized

# Score tolerance per quantization mode: float files reproduce to rounding; a quantized embedding's
# components move by whole output quanta (1/128 after int8 L2 normalization) when a runtime rounds differently.
SCORE_TOLERANCE = {"none": 1e-4, "fp16": 1e-3, "dynamic": 1e-2, "int8": 1e-2}


def add_embedding(staging: Path, folder: Path, manifest: Any, run: Any, spec: dict[str, Any],
                  vector_files: list[Path]) -> dict[str, Any] | None:
    """Copy the embedding file and prototypes.json into the staged bundle and describe them in `spec`
    (model.json); return expected.json's `verify` section (None without an embedding or a threshold)."""
    from edgetl.artifacts.run_dir import load_images
    from edgetl.targets import open_session

    facts = manifest.sections.get("prototypes")
    if not facts:
        return None
    name, table_file = facts["embedding_file"], facts["table_file"]
    for file in (name, table_file):
        shutil.copyfile(folder / file, staging / file)
    table = json.loads((staging / table_file).read_text(encoding="utf-8"))
    session = open_session(staging / name)
    similarity = table.get("similarity")
    spec["embedding"] = {
        "model_file": name, "table_file": table_file,
        "input": tensor_spec(session.inputs[0], spec["input"]["shape"]) | {"layout": spec["input"]["layout"]},
        "output": tensor_spec(session.outputs[0], [1, int(table["dim"])]) | {
            "meaning": "the image's embedding; divide by its length, then score two with `similarity.scorer`"},
        "similarity": similarity}
    if not similarity or "verify" not in similarity:
        return None
    scorer, threshold = Scorer.from_json(similarity["scorer"]), similarity["verify"]["threshold"]
    quantize = manifest.sections["artifact"]["quantize"]
    images = load_images([str(p) for p in vector_files], run.image_size, run.preprocessing)
    nchw = spec["input"]["layout"] == "NCHW"
    embeddings = normalized(np.stack([
        np.asarray(session.predict(np.ascontiguousarray(image.transpose(2, 0, 1)[None] if nchw else image[None])),
                   np.float32).reshape(-1) for image in images]))
    pairs = []
    for a, b in itertools.combinations(range(len(vector_files)), 2):
        score = float(scorer.score(embeddings[a], embeddings[b]))
        pairs.append({"first": vector_files[a].name, "second": vector_files[b].name, "score": score,
                      "same": score >= threshold})
    return {"threshold": threshold, "scorer": scorer.kind, "tolerance": SCORE_TOLERANCE[quantize],
                                "pairs": pairs}
