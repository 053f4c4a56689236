"""torchrun worker: the built-in host at SP = 8 with ``bands=8`` (the paper's fine-tuning setting), dense and
pruned; rank 0 saves outputs, world-averaged gradients and self-attention all-to-all volumes to ``argv[1]``.
The single-process reference in ``tests/test_sp8.py`` builds the same host and inputs from here."""
import os
import sys

import torch

import coredit_video as cv
from coredit_video.embedded.host import MultiViewSTDiT, host_config
from coredit_video.parallel import destroy_parallel, init_parallel
from tests.dist.common import GRIDS, STRIDE, run_modes

SP = BANDS = 8
MODES = {"dense": None, "ratio0.3": 0.3}


def build_host(seed: int = 0) -> MultiViewSTDiT:
    """The tiny host with 8 heads (one per SP rank in the all-to-all) and rows padded for 8 ranks."""
    torch.manual_seed(seed)
    return MultiViewSTDiT(host_config("tiny", num_heads=8, force_pad_h_for_sp_size=SP)).train()


def inputs(seed: int = 1):
    """One sample of 6 views, latents 48x16 -> a 24x8 token grid per frame: 3 rows per band and per rank."""
    g = torch.Generator().manual_seed(seed)
    B, NC, T, H, W = 1, 6, 2, 48, 16
    L = host_config("tiny").view_layout_channels
    return dict(x=torch.randn(B, NC, 4, T, H, W, generator=g), timestep=torch.tensor([300.0]),
                y=torch.randn(B, 5, 32, generator=g), cams=torch.randn(B, NC, 12, generator=g),
                bev_map=torch.randn(B, 3, 16, 16, generator=g),
                view_layout=(torch.rand(B, NC, L, T, H, W, generator=g) > 0.8).float())


def patch(model, mode: str):
    ratio = MODES[mode]
    return None if ratio is None else cv.apply(model, dict(ratios=ratio, bands=BANDS, grids=GRIDS, stride=STRIDE))


def main(path: str) -> None:
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    result = run_modes(MODES, patch, st, build_host, inputs)
    if st.rank == 0:
        torch.save(result, path)
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1])
