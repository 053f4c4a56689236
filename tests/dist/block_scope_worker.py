"""torchrun worker: block scope (``prune.scope="block"``) on the built-in host at SP = world size, dense and pruned;
rank 0 saves outputs, world-averaged gradients and all-to-all volumes to ``argv[1]``. ``argv[2]`` names the layout
of ``tests/test_block_scope_sp.py`` (``sp``: the host of ``tests/dist/common.py``, default; ``sp8``: that of
``tests/dist/sp8_worker.py``)."""
import os
import sys

import torch

from coredit_video.parallel import destroy_parallel, init_parallel
from tests.dist.common import run_modes
from tests.test_block_scope_sp import BLOCK_MODES, LAYOUTS


def main(path: str, layout: str = "sp") -> None:
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    build, make_inputs, patch = LAYOUTS[layout]
    result = run_modes(BLOCK_MODES, patch, st, build, make_inputs)
    if st.rank == 0:
        torch.save(result, path)
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:3])
