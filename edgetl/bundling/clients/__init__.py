"""Sources of the reference clients that `edgetl bundle` writes into a deployment bundle.

Nothing here imports edgetl: a bundle's clients are standalone. Each Python client is assembled from
one runtime part (`runtime_litert.py` or `runtime_onnxruntime.py`: a docstring, imports and a `Runtime`
class) followed by `python_common.py` (decoding, preprocessing, top-k and the self-test), so the two
clients share one copy of the preprocessing code here and are still single files in the bundle.
`node_client.js`, `node_package.json` and `node_npmrc` become the bundle's node/client.js, node/package.json
and node/.npmrc; the Markdown files are templates (@@NAME@@ placeholders filled from model.json).
"""
