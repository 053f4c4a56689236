"""torchrun worker: a 4-step denoising loop with the block-scope step cache on the built-in host at SP = world size;
rank 0 saves every step's output per mode to ``argv[1]`` (``tests/test_step_cache_sp.py``)."""
import os
import sys

import torch

from coredit_video.parallel import destroy_parallel, init_parallel
from tests.test_step_cache_sp import cache_loops


def main(path: str) -> None:
    st = init_parallel(sp_size=int(os.environ["WORLD_SIZE"]))
    result = cache_loops(st)
    if st.rank == 0:
        torch.save(result, path)
    destroy_parallel()


if __name__ == "__main__":
    main(sys.argv[1])
