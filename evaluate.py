"""Entry point: `python evaluate.py [overrides]` (see conf/evaluate.yaml); the logic is in xai_bench.tasks.evaluate."""

import hydra
from omegaconf import DictConfig

import xai_bench  # noqa: F401  (patches torchvision on CPU-only machines before anything imports it)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from xai_bench.tasks.evaluate import run

    metrics = run(cfg)
    return metrics.get("objective")  # sweepers (e.g. Optuna) optimise this


if __name__ == "__main__":
    main()
