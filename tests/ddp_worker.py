"""Run under torchrun: trains the toy task with DDP and writes this rank's final parameters.

Usage: torchrun --nproc_per_node 2 tests/ddp_worker.py RUN_DIR OUT_DIR [overrides...]
"""

import os
import sys
from pathlib import Path

from shared_attention.engine import fit, load_config, save_weights
from shared_attention.toy import PointerTask, ToyConfig


def main() -> None:
    run_dir, out_dir, *overrides = sys.argv[1:]
    cfg = load_config(ToyConfig, None, [f"train.run_dir={run_dir}", *overrides])
    result = fit(PointerTask(cfg), cfg.train, full_config=cfg)
    rank = int(os.environ["RANK"])
    assert result.model is not None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_weights(Path(out_dir) / f"rank{rank}.safetensors", result.model.state_dict())
    print(f"rank {rank}/{os.environ['WORLD_SIZE']} done at step {result.step}: {result.last_metrics}", flush=True)


if __name__ == "__main__":
    main()
