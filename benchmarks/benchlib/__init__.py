"""Building blocks of ``benchmarks/run.py``: timing and the roofline, the operations with their peers, quality per
cost, and the report. Not part of the installed package (benchmarks only)."""
