"""Benchmarks: run each as `python -m bench.<name>`; results are printed, data cached in bench/output/."""
