"""Benchmark and maintenance scripts: each runs from the checkout's root as `python -m scripts.NAME`
(the project's packages import as installed; no script edits `sys.path`). Not part of the wheel."""
