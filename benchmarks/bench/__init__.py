"""The CPU benchmarks behind `benchmarks/run.py`.

`harness` times and records (machine facts, load, the results JSON); `train`, `inference`,
`data` and `system` each measure and render their sections; `sections.SECTIONS` is the one list
of them, in the report's order; `targets.TARGETS` the goals as a table; `report` renders
BENCHMARKS.md; `cli` is the command line. Expects `src/` and `benchmarks/` on sys.path
(`run.py` puts them there).
"""
