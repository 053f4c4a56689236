"""Stand-in for ``tools/eval_bev.py`` when testing tools/slurm/eval.sbatch (``EVAL_CMD=tests/slurm/fake_eval.py``):
prints its command line and torchrun environment (FAKE_EVAL ...) and all-reduces once under torchrun."""

import os
import sys

import torch
import torch.distributed as dist


def main():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
        t = torch.ones(1)
        dist.all_reduce(t)
        assert t.item() == world, t
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"FAKE_EVAL argv={' '.join(sys.argv[1:])} world={world} "
              f"cuda_visible={os.environ.get('CUDA_VISIBLE_DEVICES', '-')}", flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
