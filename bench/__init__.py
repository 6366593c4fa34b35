"""Benchmarks and the results script: run as `python bench/NAME.py` or `python -m bench.NAME`."""
