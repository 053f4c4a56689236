"""Tiny torchrun worker for the Slurm smoke test: gloo all-reduce + resumable checkpoint.

Launched by tests/slurm/smoke.sbatch as ``torchrun ... tests/slurm/dist_ckpt.py``. Each step all-reduces
``rank + 1`` over the world and checks the sum; rank 0 writes ``<ckpt-dir>/last.json`` atomically every
``--ckpt-every`` steps. On start it resumes from that checkpoint if one exists (the ``--resume auto``
behaviour the real trainer needs after a Slurm requeue), so a requeued job continues instead of restarting.

Lines it prints that tests/slurm/run_smoke.sh greps for:
  SMOKE_START world=W restart_count=R start_step=S resumed=0|1
  SMOKE_LAYOUT local_world=L contiguous=0|1 one_task_per_group=0|1 ranks=[...]
  SMOKE_ALLREDUCE_OK world=W sum=X
  SMOKE_CKPT step=S
  SMOKE_DONE world=W steps=N restart_count=R resumed_from=S
"""

import argparse
import json
import os
import socket
import time

import torch
import torch.distributed as dist


def load_ckpt(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_ckpt(path, state):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: a kill mid-write never leaves a torn checkpoint


def run(ckpt_dir, steps=3, ckpt_every=1, step_sleep=0.0, resume=True, tag="SMOKE"):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    restart_count = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    ckpt_path = os.path.join(ckpt_dir, "last.json")

    # Rank layout: torchrun gives node (agent) k the global ranks [k*L, (k+1)*L), L = nproc_per_node, so
    # an SP group of L consecutive ranks (coredit_video.parallel.state) never spans two nodes.
    local_world = int(os.environ["LOCAL_WORLD_SIZE"])
    mine = (int(os.environ["GROUP_RANK"]), int(os.environ["LOCAL_RANK"]), socket.gethostname(),
            os.environ.get("SLURM_PROCID"))
    layout = [None] * world
    dist.all_gather_object(layout, mine)
    contiguous = all(r == g * local_world + lr for r, (g, lr, _, _) in enumerate(layout))
    same_task = all(len({layout[k * local_world + i][3] for i in range(local_world)}) == 1
                    for k in range(world // local_world))

    # Rank 0 reads the checkpoint and broadcasts it, so every rank resumes from the same step.
    state = [None]
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        state[0] = (load_ckpt(ckpt_path) if resume else None) or {"step": 0, "acc": 0.0}
    dist.broadcast_object_list(state, src=0)
    start_step, acc = state[0]["step"], state[0]["acc"]
    if rank == 0:
        print(
            f"{tag}_START world={world} restart_count={restart_count} start_step={start_step} "
            f"resumed={int(start_step > 0)} host={socket.gethostname()} "
            f"master={os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
            flush=True,
        )
        print(f"{tag}_LAYOUT local_world={local_world} contiguous={int(contiguous)} one_task_per_group="
              f"{int(same_task)} ranks={layout}", flush=True)

    expect = world * (world + 1) / 2
    for step in range(start_step + 1, steps + 1):
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        if t.item() != expect:
            raise RuntimeError(f"all_reduce gave {t.item()}, expected {expect}")
        acc += t.item()
        if step == start_step + 1 and rank == 0:
            print(f"{tag}_ALLREDUCE_OK world={world} sum={t.item():g}", flush=True)
        if rank == 0 and (step % ckpt_every == 0 or step == steps):
            save_ckpt(ckpt_path, {"step": step, "acc": acc, "restart_count": restart_count})
            print(f"{tag}_CKPT step={step}", flush=True)
        if step_sleep:
            time.sleep(step_sleep)

    dist.barrier()
    if rank == 0:
        if acc != expect * steps:
            raise RuntimeError(f"accumulated {acc}, expected {expect * steps}")
        print(f"{tag}_DONE world={world} steps={steps} restart_count={restart_count} resumed_from={start_step}",
              flush=True)
    dist.destroy_process_group()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--ckpt-every", type=int, default=1)
    p.add_argument("--step-sleep", type=float, default=0.0)
    args = p.parse_args(argv)
    run(args.ckpt_dir, args.steps, args.ckpt_every, args.step_sleep)


if __name__ == "__main__":
    main()
