"""Entry point: `python evaluate.py [overrides]` (see conf/evaluate.yaml); the logic is in xai_bench.tasks.evaluate."""

import xai_bench.cli  # patches torchvision on CPU-only machines before anything imports it

if __name__ == "__main__":
    xai_bench.cli.evaluate()
