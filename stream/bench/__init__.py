"""Benchmarks behind `vidcap bench`: they print numbers and ratios, never assert timings."""
