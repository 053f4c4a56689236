"""torchrun worker: a 2 (data) x 2 (sequence) mesh trains the built-in host with DeepSpeed ZeRO-2
for a few steps; rank 0 saves per-step losses (DP-averaged) and the final parameters."""
import sys

import torch
import torch.distributed as dist

from coredit_video.parallel import destroy_parallel, init_parallel
from coredit_video.training import build_engine, deepspeed_config
from tests.dist.common import MESH_GLOBAL_BATCH, MESH_OPTIM, MESH_STEPS, build_host, mesh_batch, mesh_loss, patch


def main(path: str, sp_size: int, mode: str) -> None:
    st = init_parallel(sp_size=sp_size)
    model = build_host()
    model.set_sequence_parallel(st.sp_group)
    patch(model, mode)
    engine = build_engine(model, deepspeed_config(micro_batch=MESH_GLOBAL_BATCH // st.dp_size, **MESH_OPTIM))
    losses = []
    for step in range(MESH_STEPS):
        batch = mesh_batch(step, st.dp_rank, st.dp_size)
        loss = mesh_loss(engine.module, batch)
        engine.backward(loss)
        engine.step()
        t = loss.detach().clone()
        dist.all_reduce(t, group=st.dp_group)
        losses.append(t.item() / st.dp_size)
    if st.rank == 0:
        torch.save(dict(losses=losses, params={n: p.detach().clone() for n, p in engine.module.named_parameters()}),
                   path)
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
