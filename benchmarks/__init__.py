"""Benchmarks for hemoe_sk: ``python -m benchmarks.run --help``.

Every model is fitted in a fresh child process on the same stratified splits;
times and memory are reported as measured and as ratios to the base network
(``max_depth=0``) fitted on the same split in the same run, because absolute
figures on a shared machine say little. See ``docs/benchmarks.rst``.
"""
