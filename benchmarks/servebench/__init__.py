"""The pieces of ``benchmarks/serve_bench.py``: wrk driver, servers, in-process runs, report."""
