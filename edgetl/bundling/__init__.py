"""Stage 5, `edgetl bundle`: an exported file packed for an app: model, labels, model.json (the input
contract), test vectors and stand-alone reference clients (`clients/`), each with a self-test
(`bundler`, `spec`); for a prototype or siamese artifact also its embedding file and verify pairs
(`embedding`).

May import: the ground only. Nothing imports bundling but the CLI and the public API.
"""
