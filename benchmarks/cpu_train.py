"""Time the main job (`mmaux synth` + `mmaux train`, default params.yaml) from a cold cache.

Prints wall time per phase, training steps/s (from the run's metrics.json) and peak RSS.
Everything is written under a temporary directory; nothing in the repository changes.

    python benchmarks/cpu_train.py [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"]["root"] = f"{tmp}/raw"
        params["data"]["cache_dir"] = f"{tmp}/cache"
        params["train"]["output_dir"] = f"{tmp}/run"
        params["train"]["progress"] = False
        pfile = Path(tmp) / "params.yaml"
        pfile.write_text(yaml.safe_dump(params))
        sets = [x for o in args.overrides for x in ("--set", o)]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        times = {}
        for command in ("synth", "train"):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mmaux", command, "--params", str(pfile), *sets],
                check=True,
                env=env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
            )
            times[command] = time.perf_counter() - start
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"cpu cores: {os.cpu_count()}  torch threads: default")
    print(
        f"synth: {times['synth']:.1f} s   train (load + features + fit + eval): "
        f"{times['train']:.1f} s   total: {sum(times.values()):.1f} s"
    )
    print(
        f"fit: {metrics['global_step']} steps in {metrics['train_seconds']:.1f} s = "
        f"{metrics['steps_per_second']:.2f} steps/s; epochs run {metrics['epochs_run']}, "
        f"best epoch {metrics['best_epoch']}"
    )
    print(f"test macro-F1 {metrics['test']['macro_f1']:.4f}; peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
