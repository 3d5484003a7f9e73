"""Entry point: `python explain.py [overrides]` (see conf/explain.yaml); the logic is in xai_bench.tasks.explain."""

import xai_bench.cli  # patches torchvision on CPU-only machines before anything imports it

if __name__ == "__main__":
    xai_bench.cli.explain()
