"""torchrun worker: the built-in host at SP = world size, dense and pruned; rank 0 saves outputs,
world-averaged gradients and all-to-all volumes to ``argv[1]``."""
import os
import sys

import torch
import torch.distributed as dist

from coredit_video.parallel import destroy_parallel, init_parallel
from tests.dist.common import BANDS, GRIDS, MODES, STRIDE, build_host, patch, run_modes


def main(path: str) -> None:
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    result = run_modes(MODES, patch, st)
    result["errors"] = errors(st)
    result["uneven"] = uneven_all_to_all(st)
    if st.rank == 0:
        torch.save(result, path)
    destroy_parallel()


def uneven_all_to_all(st) -> dict:
    """seq_to_heads / heads_to_seq with a different token count on every rank, against a gathered
    reference; gradient through the pair must be the identity."""
    from coredit_video.parallel import heads_to_seq, seq_to_heads

    P, r, h, e = st.sp_size, st.sp_rank, 4, 3
    counts = [2 + 3 * j for j in range(P)]
    full = torch.randn(2, sum(counts), h, e, generator=torch.Generator().manual_seed(5))
    start = sum(counts[:r])
    x = full[:, start:start + counts[r]].clone().requires_grad_(True)
    y = seq_to_heads(x, st.sp_group, counts)
    hs = h // P
    err_fwd = (y - full[:, :, r * hs:(r + 1) * hs]).abs().max().item()
    back = heads_to_seq(y * 2.0, st.sp_group, counts)
    err_back = (back - 2.0 * x).abs().max().item()
    back.sum().backward()
    err_grad = (x.grad - 2.0).abs().max().item()
    return dict(fwd=err_fwd, back=err_back, grad=err_grad)


def errors(st) -> dict:
    """Messages of the errors a user gets for an SP layout that cannot work."""
    import coredit_video as cv
    from coredit_video.embedded.host import MultiViewSTDiT, host_config

    out = {}
    model = build_host()
    model.set_sequence_parallel(st.sp_group)
    try:  # bands must be whole per rank
        cv.apply(model, dict(ratios=0.3, bands=st.sp_size // 2, grids=GRIDS, stride=STRIDE))
    except ValueError as e:
        out["bands"] = str(e)
    from coredit_video.methods import REGISTRY

    for name, cls in REGISTRY.items():  # methods without an SP path are refused in one line
        if not cls.supports_sp:
            try:
                cv.apply(model, dict(ratios=0.3, bands=BANDS, grids=GRIDS, stride=STRIDE, method=name))
            except ValueError as e:
                out[f"method_{name}"] = str(e)
            cv.remove(model)
    try:  # heads must split over the SP ranks
        MultiViewSTDiT(host_config("tiny", num_heads=st.sp_size // 2 or 1, hidden=66 if st.sp_size == 4 else 63)
                       ).set_sequence_parallel(st.sp_group)
    except ValueError as e:
        out["heads"] = str(e)
    return out


if __name__ == "__main__":
    main(sys.argv[1])
