"""Benchmarks: medians and ratios against the floor (plain torch) and the reference libraries,
measured in the same run. Run all with ``make bench`` (``python -m benchmarks``)."""
