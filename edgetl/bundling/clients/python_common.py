# ------------------------------------------------------------------------------------------------
# The rest of this file is the same in every Python client of an edgetl bundle: decode an image file,
# preprocess it exactly as training did (model.json says how), run it, print the top-k labels; or,
# with --selftest, check every test vector against test_vectors/expected.json.

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that turns the stored pixels upright (as PIL's ImageOps.exif_transpose).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ClientError(Exception):
    """A file or option this client cannot use: one line, exit status 2."""


def load_rgb(path):
    """The image as training decoded it: 8-bit RGB (grayscale expanded, alpha dropped, not blended;
    16-bit samples keep their high byte), a JPEG turned upright by its EXIF orientation, a GIF's first frame."""
    try:
        with Image.open(path) as image:
            if image.mode in SIXTEEN_BIT_GRAY:
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                upright = Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
            else:
                upright = image.convert("RGB")
            if image.format in ("JPEG", "MPO"):
                orientation = image.getexif().get(EXIF_ORIENTATION, 1)
                if orientation in UPRIGHT:
                    upright = upright.transpose(UPRIGHT[orientation])
            return np.asarray(upright, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for unreadable or truncated files
        raise ClientError(f"{path}: cannot read the image ({error})") from None


def _bilinear_axis(in_size, out_size):
    # TensorFlow's half-pixel scaler, in float32: source = (i + 0.5) * in / out - 0.5.
    scale = np.float32(in_size) / np.float32(out_size)
    source = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(source)
    low = np.maximum(floor, 0).astype(np.intp)
    high = np.minimum(np.ceil(source), in_size - 1).astype(np.intp)
    return low, high, (source - floor).astype(np.float32)


def resize_bilinear(pixels, height, width):
    """tf.image.resize(method="bilinear") as training used it: half-pixel centers, no antialiasing, no crop,
    aspect ratio not kept; float32 arithmetic in TensorFlow's order, so the result is the same to the bit."""
    image = pixels.astype(np.float32)
    y_low, y_high, y_lerp = _bilinear_axis(image.shape[0], height)
    x_low, x_high, x_lerp = _bilinear_axis(image.shape[1], width)

    def across(rows):
        left, right = rows[:, x_low], rows[:, x_high]
        return left + (right - left) * x_lerp[None, :, None]

    top, bottom = across(image[y_low]), across(image[y_high])
    return top + (bottom - top) * y_lerp[:, None, None]


def preprocess(path, spec):
    """One image file -> the float32 input tensor the model was trained on ([1, H, W, 3] or [1, 3, H, W])."""
    pre = spec["preprocessing"]
    height, width = pre["resize"]["height"], pre["resize"]["width"]
    image = resize_bilinear(load_rgb(path), height, width)
    mean = np.asarray(pre["normalization"]["mean"], np.float32)
    std = np.asarray(pre["normalization"]["std"], np.float32)
    tensor = ((image - mean) / std)[None]
    if spec["input"]["layout"] == "NCHW":
        tensor = tensor.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(tensor, dtype=np.float32)


def quantize(values, tensor):
    """Float values -> the tensor's integer type with its scale and zero point (round half to even, clip)."""
    q = tensor.get("quantization")
    if not q:
        return values.astype(np.float32)
    limits = np.iinfo(tensor["dtype"])
    return np.clip(np.round(values / q["scale"] + q["zero_point"]), limits.min, limits.max).astype(tensor["dtype"])


def dequantize(values, tensor):
    q = tensor.get("quantization")
    if not q:
        return values.astype(np.float32)
    return (values.astype(np.float32) - q["zero_point"]) * q["scale"]


def classify(runtime, spec, path):
    """Probabilities (float32, one per line of labels.txt) and the float input tensor, for one image file."""
    tensor = preprocess(path, spec)
    raw = runtime.run(quantize(tensor, spec["input"]))
    return dequantize(np.asarray(raw).reshape(-1), spec["output"]), tensor


def compare(got, vector, tolerance, labels):
    """What differs between this client's probabilities and the expected ones ([] when they match)."""
    want = np.asarray(vector["probabilities"], np.float32)
    if got.shape != want.shape:
        return [f"{got.size} outputs, expected {want.size}"]
    problems = []
    diff = np.abs(got - want)
    top, want_top = int(np.argmax(got)), int(np.argmax(want))
    # A different top-1 is a mismatch, unless the expected probabilities of both classes are a near tie.
    if top != want_top and want[want_top] - want[top] > tolerance:
        problems.append(f"top-1 {labels[top]}, expected {labels[want_top]}")
    worst = int(np.argmax(diff))
    if diff[worst] > tolerance:
        problems.append(f"max |diff| {diff[worst]:.3g} > {tolerance:g} at {labels[worst]} "
                        f"(got {got[worst]:.6f}, expected {want[worst]:.6f})")
    return problems


def embed(runtime, spec, path):
    """The unit-length embedding of one image file (model.json's `embedding` section says how)."""
    section = spec["embedding"]
    raw = runtime.run(quantize(preprocess(path, spec), section["input"]))
    vector = dequantize(np.asarray(raw).reshape(-1), section["output"])
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def score(first, second, scorer):
    """How alike two unit-length embeddings are (higher: more alike), by the run's scorer."""
    if scorer["kind"] == "cosine":
        return float(np.dot(first, second))
    logit = float(np.abs(first - second) @ np.asarray(scorer["weights"], np.float32)) + scorer["bias"]
    return 1.0 / (1.0 + np.exp(-logit))


def verify(embedder, spec, first, second):
    """(score, same): are the two image files the same thing, at the threshold edgetl calibrated."""
    similarity = spec["embedding"]["similarity"]
    value = score(embed(embedder, spec, first), embed(embedder, spec, second), similarity["scorer"])
    return value, value >= similarity["verify"]["threshold"]


def selftest_pairs(embedder, spec, expected):
    """Every test-vector pair's score and decision against expected.json's `verify`; returns the failures."""
    check = expected["verify"]
    tolerance, threshold = check["tolerance"], check["threshold"]
    vectors = {}
    failed, worst = 0, 0.0
    for pair in check["pairs"]:
        for name in (pair["first"], pair["second"]):
            if name not in vectors:
                vectors[name] = embed(embedder, spec, HERE / "test_vectors" / name)
        value = score(vectors[pair["first"]], vectors[pair["second"]], spec["embedding"]["similarity"]["scorer"])
        diff = abs(value - pair["score"])
        worst = max(worst, diff)
        flipped = (value >= threshold) != pair["same"] and abs(pair["score"] - threshold) > tolerance
        if diff > tolerance or flipped:
            failed += 1
            print(f"  FAIL  verify {pair['first']} {pair['second']}: score {value:.6f}, expected "
                  f"{pair['score']:.6f} ({'same' if pair['same'] else 'different'})")
    if not failed:
        print(f"  ok    verify: {len(check['pairs'])} pairs, same decisions, max |score diff| {worst:.2e}")
    return failed


def selftest(runtime, spec, labels, embedder=None):
    expected = json.loads((HERE / "test_vectors" / "expected.json").read_text(encoding="utf-8"))
    tolerance = float(expected["tolerance"]["max_abs_diff"])
    vectors = expected["vectors"]
    own = expected.get("by_runtime", {}).get(getattr(runtime, "key", None))
    if own:  # this runtime's own outputs, recorded when the bundle was made (its kernels round differently)
        vectors = [dict(vector, probabilities=p) for vector, p in zip(vectors, own["probabilities"])]
    print(f"selftest: {spec['model_file']} in {runtime.name}, {len(vectors)} test vectors, "
          f"tolerance: top-1 equal and max |diff| <= {tolerance:g}"
          + (f", expected: {runtime.name.split()[0]}'s own outputs" if own else ""))
    failed = 0
    for vector in vectors:
        got, tensor = classify(runtime, spec, HERE / "test_vectors" / vector["file"])
        problems = compare(got, vector, tolerance, labels)
        diff = float(np.max(np.abs(got - np.asarray(vector["probabilities"], np.float32)))) if got.size == len(
            vector["probabilities"]) else float("nan")
        if problems:
            failed += 1
            hint, mean = "", float(tensor.mean())
            if abs(mean - vector["input_mean"]) > 1e-4:
                hint = f"; input tensor mean {mean:.6f}, expected {vector['input_mean']:.6f}: preprocessing differs"
            print(f"  FAIL  {vector['file']}: {'; '.join(problems)}{hint}")
        else:
            print(f"  ok    {vector['file']}: top-1 {labels[int(np.argmax(got))]}, max |diff| {diff:.2e}")
    pairs_failed = selftest_pairs(embedder, spec, expected) if embedder and "verify" in expected else 0
    if pairs_failed:
        print(f"selftest FAILED: {pairs_failed} of {len(expected['verify']['pairs'])} verify pairs differ from "
              f"expected.json")
        return 1
    if failed:
        print(f"selftest FAILED: {failed} of {len(vectors)} test vectors differ from expected.json")
        return 1
    print(f"selftest passed: {len(vectors)} of {len(vectors)} test vectors match")
    return 0


def unknown_check(embedder, spec, path):
    """(best cosine to the class prototypes, threshold, nearest label) when the bundle can tell an image of a
    class it does not know (a prototype or siamese run's, calibrated), else None."""
    section = spec.get("embedding") or {}
    unknown = (section.get("similarity") or {}).get("unknown")
    if embedder is None or not unknown:
        return None
    table = json.loads((HERE / section["table_file"]).read_text(encoding="utf-8"))
    cosines = np.asarray(table["vectors"], np.float32) @ embed(embedder, spec, path)
    best = int(np.argmax(cosines))
    return float(cosines[best]), unknown["threshold"], table["labels"][best]


def top_k(runtime, spec, labels, paths, k, embedder=None):
    for path in paths:
        probabilities, _ = classify(runtime, spec, path)
        print(path)
        check = unknown_check(embedder, spec, path)
        if check and check[0] < check[1]:
            print(f"  unknown: best cosine {check[0]:.4f} (to {check[2]}) < threshold {check[1]:.4f}")
        for index in np.argsort(-probabilities, kind="stable")[:k]:
            print(f"  {labels[index]}  {probabilities[index]:.4f}")


def main(runtime_class, argv=None):
    parser = argparse.ArgumentParser(description=f"Classify image files with {HERE.name}'s model "
                                                 f"({runtime_class.name}), preprocessed exactly as in training.")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, BMP, GIF)")
    parser.add_argument("--top-k", type=int, default=3, help="labels to print per image [3]")
    parser.add_argument("--threads", type=int, default=None,
                        help="inference threads [model.json's runtime_settings.threads: what edgetl measured "
                             "fastest, else the runtime default]")
    parser.add_argument("--verify", nargs=2, metavar=("A", "B"),
                        help="are two image files the same thing? (bundles of prototype and siamese runs)")
    parser.add_argument("--selftest", action="store_true",
                        help="run every test vector and compare with test_vectors/expected.json; exit 1 on a mismatch")
    args = parser.parse_args(argv)
    if not args.selftest and not args.images and not args.verify:
        parser.error("give image files to classify, --verify A B, or --selftest")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    try:
        spec = json.loads((HERE / "model.json").read_text(encoding="utf-8"))
        labels = (HERE / spec["output"]["labels_file"]).read_text(encoding="utf-8").splitlines()
        threads = args.threads or (spec.get("runtime_settings") or {}).get("threads")
        runtime = runtime_class(HERE / spec["model_file"], threads)
        embedder = runtime_class(HERE / spec["embedding"]["model_file"], threads) if "embedding" in spec else None
        if args.selftest:
            return selftest(runtime, spec, labels, embedder)
        if args.verify:
            if not embedder or not (spec["embedding"].get("similarity") or {}).get("verify"):
                raise ClientError("this bundle has no calibrated embedding model; --verify needs the bundle of a "
                                  "prototype or siamese run (edgetl train --head prototype|siamese)")
            value, same = verify(embedder, spec, *args.verify)
            threshold = spec["embedding"]["similarity"]["verify"]["threshold"]
            print(f"{'same' if same else 'different'}: score {value:.4f} {'>=' if same else '<'} threshold "
                  f"{threshold:.4f}")
            return 0
        top_k(runtime, spec, labels, args.images, args.top_k, embedder)
    except (ClientError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(Runtime))  # noqa: F821  (the Runtime class at the top of the assembled client)
