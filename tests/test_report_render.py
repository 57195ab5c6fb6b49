"""edgetl.runner.report_render: the Pareto front, the Markdown and HTML renders, and the HTML page in headless Chromium."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from PIL import Image

from edgetl.runner.report_render import pareto_front, render_html, render_markdown


def _latency(p50: float, threads: int) -> dict:
    return {"threads": threads, "batch": 1, "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.5,
            "mean_ms": p50 * 1.02, "std_ms": p50 * 0.05, "runs": 2000, "first_ms": p50 * 8, "load_ms": 12.0}


def _artifact(name: str, fmt: str, quantize: str, runtime: str, size: int, accuracy: float, agreement: float,
              p50_1: float, p50_2: float, gate_reasons: list[str] | None = None,
              mcu_problems: list[str] | None = None) -> dict:
    return {
        "name": name, "path": f"/run/artifacts/{name}/model.{fmt}", "format": fmt, "quantize": quantize,
        "runtime": runtime, "bytes": size,
        "parity": {"accuracy": accuracy, "accuracy_delta_pts": round(100 * (accuracy - 0.961), 2),
                   "top1_agreement": agreement, "mean_abs_prob_diff": 0.004,
                   "per_class_delta_pts": {"0": 0.0, "1": -2.7}},
        "latency": [_latency(p50_1, 1), _latency(p50_2, 2)],
        "throughput": {"batch": 8, "threads": 2, "images_per_s": 1000 / p50_2 * 1.6},
        "peak_rss_bytes": 312_000_000,
        "target_checks": {"x86-cpu": [], "mcu": mcu_problems or []},
        "gate": {"passed": not gate_reasons, "reasons": gate_reasons or []},
        "skipped": None,
    }


def realistic_report() -> dict:
    """A report as `edgetl bench` writes it: five measured artifacts (one fails the gate), one skipped."""
    flash = "file size {:,} B over the 256,000 B flash budget"
    artifacts = [
        _artifact("tflite-int8", "tflite", "int8", "litert", 612_345, 0.958, 0.994, 0.41, 0.30,
                  mcu_problems=[flash.format(612_345)]),
        _artifact("onnx-int8", "onnx", "int8", "onnxruntime", 598_112, 0.958, 0.991, 0.38, 0.27,
                  mcu_problems=[flash.format(598_112)]),
        _artifact("tflite-float16", "tflite", "float16", "litert", 1_102_400, 0.961, 1.0, 0.72, 0.46,
                  mcu_problems=[flash.format(1_102_400), "float16 ops are not supported by TFLite Micro"]),
        _artifact("tflite-float32", "tflite", "none", "litert", 2_190_880, 0.961, 1.0, 0.78, 0.49,
                  mcu_problems=[flash.format(2_190_880)]),
        _artifact("onnx-int4-weights", "onnx", "int4", "onnxruntime", 402_004, 0.931, 0.962, 0.95, 0.61,
                  gate_reasons=["accuracy drop 3.00 pts > 0.5", "top-1 agreement 0.962 < 0.98"],
                  mcu_problems=[flash.format(402_004)]),
        {"name": "onnx-fp16-cuda", "path": "/run/artifacts/onnx-fp16-cuda/model.onnx", "format": "onnx",
         "quantize": "float16", "runtime": "onnxruntime", "bytes": 1_101_000, "parity": None, "latency": None,
         "throughput": None, "peak_rss_bytes": None, "target_checks": None, "gate": None,
         "skipped": "CUDAExecutionProvider not available: no NVIDIA GPU"},
    ]
    return {
        "schema": "edgetl.report", "schema_version": 1, "created": "2026-11-29T12:00:00+00:00",
        "machine": {"cpu": "Intel Xeon Platinum 8481C", "isa_flags": ["avx2", "avx512f", "avx512_vnni"], "cores": 2,
                    "python": "3.11.7", "versions": {"edgetl": "0.1.0", "ai-edge-litert": "2.3.0",
                                                     "onnxruntime": "1.32.0", "tensorflow": "2.21.0"}},
        "settings": {"threads": [1, 2], "warmup": 5, "min_runs": 50, "min_seconds": 1.0, "throughput_batch": 8,
                     "data": "/path/to/val", "images": 359, "gate": {"max_accuracy_drop": 0.5, "min_agreement": 0.98}},
        "reference": {"name": "keras-float32", "accuracy": 0.961, "per_class_accuracy": {"0": 1.0, "1": 0.97}},
        "artifacts": artifacts,
        "recommendations": {
            "x86-cpu": {"artifact": "onnx-int8", "path": "/run/artifacts/onnx-int8/model.onnx", "p50_ms": 0.38,
                        "threads": 1, "reason": "fastest artifact that passes the gate"},
            "mcu": {"artifact": None, "reason": "no artifact passes the mcu target checks"},
        },
        "pareto": ["onnx-int8", "tflite-float16", "onnx-int4-weights"],
    }


# ------------------------------------------------------------------------------------------- pareto_front

def _point(name: str, latency_ms: float, accuracy: float, size: int) -> dict:
    return {"name": name, "latency_ms": latency_ms, "accuracy": accuracy, "bytes": size}


def test_pareto_front_drops_dominated_points_and_keeps_trade_offs():
    points = [_point("fast-small", 1.0, 0.90, 100), _point("accurate", 5.0, 0.97, 400),
              _point("worse-everywhere", 6.0, 0.89, 500), _point("slower-same", 1.5, 0.90, 100),
              _point("tiny", 9.0, 0.80, 50)]
    assert pareto_front(points) == ["fast-small", "accurate", "tiny"]


def test_pareto_front_ties_and_identical_points():
    # Equal on two axes, better on one: the better one dominates.
    assert pareto_front([_point("a", 1.0, 0.9, 100), _point("b", 1.0, 0.9, 120)]) == ["a"]
    assert pareto_front([_point("a", 1.0, 0.9, 100), _point("b", 1.0, 0.91, 100)]) == ["b"]
    # Identical points do not dominate each other: both stay.
    assert pareto_front([_point("a", 1.0, 0.9, 100), _point("b", 1.0, 0.9, 100)]) == ["a", "b"]
    # A tie on one axis with a trade-off on the others: both stay.
    assert pareto_front([_point("a", 1.0, 0.9, 200), _point("b", 1.0, 0.8, 100)]) == ["a", "b"]


def test_pareto_front_of_the_fixture_matches_its_report():
    report = realistic_report()
    points = [{"name": a["name"], "latency_ms": a["latency"][0]["p50_ms"], "accuracy": a["parity"]["accuracy"],
               "bytes": a["bytes"]} for a in report["artifacts"] if not a["skipped"]]
    assert pareto_front(points) == report["pareto"]


def test_pareto_front_single_and_empty():
    assert pareto_front([_point("only", 3.0, 0.5, 10)]) == ["only"]
    assert pareto_front([]) == []


# ------------------------------------------------------------------------------------------ the renders

def test_markdown_has_recommendation_artifacts_skips_and_gate_failures():
    text = render_markdown(realistic_report())
    assert "**x86-cpu: ship onnx-int8**" in text
    assert "fastest artifact that passes the gate · p50 0.38 ms at 1 thread · accuracy 95.8% (-0.30 pts)" in text
    assert "mcu: nothing to ship" in text and "no artifact passes the mcu target checks" in text
    for name in ("tflite-int8", "onnx-int8", "tflite-float16", "tflite-float32", "onnx-int4-weights", "onnx-fp16-cuda"):
        assert name in text
    assert "onnx-fp16-cuda: CUDAExecutionProvider not available: no NVIDIA GPU" in text
    assert "FAIL: accuracy drop 3.00 pts > 0.5; top-1 agreement 0.962 < 0.98" in text
    assert "tflite-float16 on mcu: float16 ops are not supported by TFLite Micro" in text
    assert "| p50 / p90 ms @1 thread | p50 / p90 ms @2 threads |" in text
    assert "| onnx-int8 | onnx | int8 | 598 KB | 95.8% | -0.30 | 99.1% | 0.38 / 0.42 | 0.27 / 0.30 | pass |" in text
    assert "Intel Xeon Platinum 8481C · 2 cores" in text


def test_html_has_banner_plot_tables_and_is_self_contained():
    page = render_html(realistic_report())
    banner = page[page.index("<header"):page.index("</header>")]
    assert "x86-cpu: ship <code>onnx-int8</code>" in banner and "mcu: nothing to ship" in banner
    for name in ("tflite-int8", "onnx-int8", "tflite-float16", "tflite-float32", "onnx-int4-weights", "onnx-fp16-cuda"):
        assert name in page
    assert "CUDAExecutionProvider not available: no NVIDIA GPU" in page
    assert "top-1 agreement 0.962 &lt; 0.98" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'\"" in page  # the browser blocks anything else
    svg = _svg_of(page)
    circles = [c for c in svg.iter("{http://www.w3.org/2000/svg}circle")]
    assert len(circles) == 5 + 1  # five measured artifacts, plus the ring around the recommended one
    assert "onnx-fp16-cuda" not in ElementTree.tostring(svg, encoding="unicode")  # skipped: listed, not plotted
    assert any(line.get("stroke-dasharray") == "7 5" for line in svg.iter("{http://www.w3.org/2000/svg}line"))
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) == 1  # the Pareto front


def _svg_of(page: str) -> ElementTree.Element:
    """The inline SVG, parsed as strict XML (a malformed plot fails here)."""
    return ElementTree.fromstring(page[page.index("<svg"):page.index("</svg>") + len("</svg>")])


def test_names_with_markup_are_escaped():
    report = realistic_report()
    evil = "<script>alert('x')</script>|int8"
    report["artifacts"][0]["name"] = evil
    report["artifacts"][0]["gate"] = {"passed": False, "reasons": ["<b>bold</b> & co"]}
    report["recommendations"]["x86-cpu"]["artifact"] = evil
    report["pareto"][0] = evil
    page = render_html(report)
    assert "<script>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    _svg_of(page)  # still well-formed XML
    text = render_markdown(report)
    # Markdown backslash escapes: no tag can start, and the pipe does not split the table cell.
    assert re.search(r"(?<!\\)<[A-Za-z/]", text) is None and "\\<b>bold\\</b> & co" in text
    assert "| \\<script>alert('x')\\</script>\\|int8 |" in text


def test_edge_cases_single_artifact_no_recommendation_nothing_measured():
    report = realistic_report()
    report["artifacts"] = report["artifacts"][:1]
    report["pareto"] = None  # the renderer computes the front itself
    report["recommendations"] = {"x86-cpu": {"artifact": None, "reason": "no artifact passes the gate"}}
    page = render_html(report)
    assert "nothing to ship" in page and "no artifact passes the gate" in page
    assert len(list(_svg_of(page).iter("{http://www.w3.org/2000/svg}circle"))) == 1
    assert "**tflite-int8** (not dominated" in render_markdown(report)

    report["artifacts"] = [copy.deepcopy(realistic_report()["artifacts"][-1])]  # only a skipped one
    report["recommendations"] = None
    page, text = render_html(report), render_markdown(report)
    assert "<svg" not in page and "Nothing to plot" in page
    assert "No recommendation in this report" in page and "No recommendation in this report" in text
    assert "CUDAExecutionProvider not available" in page and "No artifact was measured." in text


# ---------------------------------------------------------------------------------- headless Chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    """$EDGETL_CHROMIUM, else chromium, chromium-browser or google-chrome on PATH. None found: the test skips
    with the reason, except under CI (CI set), where it fails, so a missing dependency cannot hide as a skip."""
    if os.environ.get("EDGETL_CHROMIUM"):
        found = shutil.which(os.environ["EDGETL_CHROMIUM"])
        if not found:
            pytest.fail(f"EDGETL_CHROMIUM={os.environ['EDGETL_CHROMIUM']} is not an executable")
        return found
    for name in CHROMIUM_NAMES:
        if shutil.which(name):
            return shutil.which(name)
    reason = ("headless Chromium not found (none of chromium, chromium-browser, google-chrome on PATH, and "
              "EDGETL_CHROMIUM unset); on Debian: apt-get install -y --no-install-recommends chromium")
    if "CI" in os.environ:
        pytest.fail(f"CI is set: {reason}")
    pytest.skip(reason)


def test_a_missing_chromium_skips_locally_but_fails_in_ci(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: nothing to find
    monkeypatch.delenv("EDGETL_CHROMIUM", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium not found"):
        find_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set: headless Chromium not found"):
        find_chromium()
    monkeypatch.setenv("EDGETL_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(pytest.fail.Exception, match="is not an executable"):
        find_chromium()


def _open_in_chromium(chromium: str, page: Path, screenshot: Path) -> tuple[str, list[str]]:
    """Load the page headless: returns the DOM after loading and the console messages Chromium logged."""
    result = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={page.parent / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,1600", "--hide-scrollbars", f"--screenshot={screenshot}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def test_html_renders_in_headless_chromium(tmp_path: Path):
    chromium = find_chromium()
    # The check must be able to fail: a page with a script error and a blocked external image logs both.
    broken = tmp_path / "broken.html"
    broken.write_text(render_html(realistic_report()).replace(
        "</body>", '<img src="http://example.invalid/x.png"><script>notDefined()</script></body>'))
    _, console = _open_in_chromium(chromium, broken, tmp_path / "broken.png")
    assert console, "Chromium's console log is not captured: this test could not see errors"

    report = realistic_report()
    page, screenshot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(render_html(report), encoding="utf-8")
    dom, console = _open_in_chromium(chromium, page, screenshot)
    assert console == []
    assert "<svg" in dom and "</svg>" in dom and dom.count("<circle") == 6
    assert "x86-cpu: ship <code>onnx-int8</code>" in dom
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1_000_000)
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    # The banner at the top is the recommendation's green.
    assert image.getpixel((600, 5)) == (0x1A, 0x7F, 0x37)
