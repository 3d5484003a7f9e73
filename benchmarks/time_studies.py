"""Wall time of each study of the README's "Studies" section at full size, as the README runs it.

Each study is its chain of one-line commands (train → attack → explain where it has several steps), run one after
the other from the repository root with W&B off; the table gives each command's wall time and exit status.

    python benchmarks/time_studies.py                          # all five studies (hours on 2 CPU cores)
    python benchmarks/time_studies.py --studies ood_ensemble lime_vs_rise --out studies_times.md

Measure on an idle machine: on a shared one the numbers say more about the neighbours than about the studies.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The README's commands, verbatim apart from the interpreter.
STUDIES: dict[str, list[str]] = {
    "ood_ensemble": ["evaluate.py experiment=ood_ensemble/evaluate",
                     "explain.py -m experiment=ood_ensemble/explain"],
    "asl_cnn_vs_darknet": ["train.py -m experiment=asl_cnn_vs_darknet/train",
                           "attack.py -m experiment=asl_cnn_vs_darknet/attack",
                           "explain.py -m experiment=asl_cnn_vs_darknet/explain"],
    "cifar_vgg_resnet": ["train.py -m experiment=cifar_vgg_resnet/train",
                         "explain.py -m experiment=cifar_vgg_resnet/explain",
                         "attack.py -m experiment=cifar_vgg_resnet/attack"],
    "lime_vs_rise": ["explain.py -m experiment=lime_vs_rise"],
    "xai_suite": ["explain.py experiment=xai_suite"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", choices=sorted(STUDIES), default=list(STUDIES))
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()
    env = {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "1"}
    lines = ["| study | command | wall | exit |", "|---|---|---:|---:|"]
    failed = 0
    for study in args.studies:
        total = 0.0
        for cmd in STUDIES[study]:
            start = time.perf_counter()
            quiet = "trainer.progress=false" if cmd.startswith("train.py") else "progress=false"
            rc = subprocess.run([sys.executable, *cmd.split(), "logger=none", quiet], cwd=ROOT, env=env).returncode
            took = time.perf_counter() - start
            total += took
            failed += rc != 0
            lines.append(f"| {study} | `python {cmd}` | {took / 60:.1f} min | {rc} |")
            print(lines[-1], flush=True)
        lines.append(f"| **{study}** | all steps | **{total / 60:.1f} min** | |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
