"""Stage 4, `edgetl bench` and `edgetl inspect`: every exported file run in its runtimes (edgetl.targets)
for latency (`latency`, and `workers` running `bench_worker` in fresh processes), accuracy parity against the float model (`parity`,
`multitask_bench`), checks against a target profile, the machine it ran on (`machine`), the
recommendation per target (`ranking`: a configuration re-timed side by side, ties to the smaller file), and the
reports (`report_render`, `report_plot`, `report_style`); the structure and numeric checks an
exported file must pass (`verification`); `edgetl inspect`'s rendering (`inspect_report`). One-shot questions
to an embedding (a run's or an exported file's): `edgetl verify`, `classify`, `calibrate` (`oneshot`) and
`edgetl evaluate`'s N-way K-shot episodes (`episodes`).

May import: the ground only. The other stages import the runner, never the other way round.
"""
