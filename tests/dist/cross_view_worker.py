"""torchrun worker: the built-in host at SP = world size with cross-view pruning; rank 0 saves outputs,
world-averaged gradients and the all-to-all volumes to ``argv[1]``."""
import os
import sys

import torch

from coredit_video.parallel import destroy_parallel, init_parallel
from tests.dist.common import run_modes
from tests.test_cross_view_sp import CROSS_VIEW_MODES, patch_cross_view


def main(path: str) -> None:
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    result = run_modes(CROSS_VIEW_MODES, patch_cross_view, st)
    if st.rank == 0:
        torch.save(result, path)
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1])
