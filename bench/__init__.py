"""Benchmarks: run each as `python -m bench.<name>`; data is cached in bench/output/."""
