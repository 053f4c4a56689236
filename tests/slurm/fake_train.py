"""Stand-in for ``tools/train.py`` when testing tools/slurm/train.sbatch (``TRAIN_CMD=tests/slurm/fake_train.py``).

Takes the same command line as the real trainer (``CONFIG [--resume auto] [--work-dir DIR] [--cfg-options ...]``),
prints it, then runs the gloo all-reduce + checkpoint loop of dist_ckpt.py in ``--work-dir`` (resuming only
with ``--resume auto``, like the real one). Lines: FAKE_TRAIN_ARGV, FAKE_TRAIN_START/LAYOUT/CKPT/DONE.
Knobs from the environment: FAKE_STEPS [12], FAKE_STEP_SLEEP [0.5].
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dist_ckpt import run  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--resume", default=None)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--cfg-options", nargs="+", default=[])
    args = p.parse_args()
    if os.environ.get("RANK", "0") == "0":
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        print(f"FAKE_TRAIN_ARGV {' '.join(sys.argv[1:])}", flush=True)
        print(f"FAKE_TRAIN_ENV world={os.environ.get('WORLD_SIZE')} local_world={os.environ.get('LOCAL_WORLD_SIZE')} "
              f"nnodes_env={os.environ.get('GROUP_WORLD_SIZE')} cuda_visible={gpus or '-'} "
              f"slurm_job={os.environ.get('SLURM_JOB_ID')}", flush=True)
    work_dir = args.work_dir or os.path.join("work_dirs", os.path.splitext(os.path.basename(args.config))[0])
    run(work_dir, steps=int(os.environ.get("FAKE_STEPS", "12")), ckpt_every=1,
        step_sleep=float(os.environ.get("FAKE_STEP_SLEEP", "0.5")), resume=args.resume == "auto", tag="FAKE_TRAIN")


if __name__ == "__main__":
    main()
