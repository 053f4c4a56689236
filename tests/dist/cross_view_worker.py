"""torchrun worker: the built-in host at SP = world size with cross-view pruning; rank 0 saves outputs,
world-averaged gradients and the cross-view all-to-all volumes to ``argv[1]``."""
import os
import sys

import torch
import torch.distributed as dist

from coredit_video.parallel import destroy_parallel, init_parallel, measure_comm
from tests.dist.common import build_host, inputs, loss_of
from tests.test_cross_view_sp import CROSS_VIEW_MODES, patch_cross_view


def main(path: str) -> None:
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    result = {}
    for mode in CROSS_VIEW_MODES:
        model = build_host()
        model.set_sequence_parallel(st.sp_group)
        patch_cross_view(model, mode)
        with measure_comm() as fwd:
            out = model(**inputs())
        with measure_comm() as bwd:
            loss_of(out).backward()
        grads = {}
        for name, p in model.named_parameters():
            g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)
            grads[name] = g / st.world_size
        volume = torch.tensor([fwd.by_tag.get("cross_view", 0), bwd.by_tag.get("cross_view", 0),
                               fwd.by_tag.get("self_attn", 0)], dtype=torch.float64)
        dist.all_reduce(volume)
        result[mode] = dict(out=out.detach(), grads=grads, cross_view_fwd=volume[0].item(),
                            cross_view_bwd=volume[1].item(), self_attn_fwd=volume[2].item(),
                            bytes_per_element=4)
    if st.rank == 0:
        torch.save(result, path)
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1])
