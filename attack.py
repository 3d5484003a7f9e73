"""Entry point: `python attack.py [overrides]` (see conf/attack.yaml). The logic lives in xai_bench.tasks.attack."""

import hydra
from omegaconf import DictConfig

import xai_bench  # noqa: F401  (patches torchvision on CPU-only machines before anything imports it)


@hydra.main(version_base="1.3", config_path="conf", config_name="attack")
def main(cfg: DictConfig) -> float | None:
    from xai_bench.tasks.attack import run

    metrics = run(cfg)
    return metrics.get("objective")  # sweepers (e.g. Optuna) optimise this


if __name__ == "__main__":
    main()
