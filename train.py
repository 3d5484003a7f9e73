"""Entry point: `python train.py [overrides]` (see conf/train.yaml); the logic is in xai_bench.tasks.train."""

import xai_bench.cli  # patches torchvision on CPU-only machines before anything imports it

if __name__ == "__main__":
    xai_bench.cli.train()
