"""Entry point: `python attack.py [overrides]` (see conf/attack.yaml); the logic is in xai_bench.tasks.attack."""

import xai_bench.cli  # patches torchvision on CPU-only machines before anything imports it

if __name__ == "__main__":
    xai_bench.cli.attack()
