import pytest
import torch

from coredit_video.embedded.host import MultiViewSTDiT, host_config

SMALL_GRIDS = [((4, 4), (2, 2)), ((3, 3), (2, 2))]


@pytest.fixture
def tiny_host():
    torch.manual_seed(0)
    return MultiViewSTDiT(host_config("tiny")).eval()


@pytest.fixture
def tiny_inputs():
    g = torch.Generator().manual_seed(1)
    B, NC, T, H, W = 2, 6, 3, 12, 12
    return dict(
        x=torch.randn(B, NC, 4, T, H, W, generator=g),
        timestep=torch.tensor([10.0, 500.0]),
        y=torch.randn(B, 5, 32, generator=g),
        cams=torch.randn(B, NC, 12, generator=g),
        bev_map=torch.randn(B, 3, 16, 16, generator=g),
    )
