"""The attention backends on CUDA (torch SDPA's flash / memory-efficient kernels, and flash-attn /
xformers where they import) against the explicit-softmax reference. Skipped without a CUDA device;
tools/gpu_check.sh runs it on one."""
import pytest
import torch

from coredit_video.attention.backends import attention, available_backends

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TOL = dict(atol=2e-2, rtol=2e-2)  # bf16 inputs, fp32 reference


def _qkv(head_dim, n=1000, heads=4, batch=3, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(batch, n, heads, head_dim, device="cuda", generator=g, dtype=torch.float32)
            for _ in range(3)]


def _reference(q, k, v, scale):
    qt, kt, vt = (t.transpose(1, 2).double() for t in (q, k, v))
    return ((qt * scale) @ kt.transpose(-2, -1)).softmax(-1).matmul(vt).transpose(1, 2).float()


@pytest.mark.parametrize("head_dim", [64, 72])  # 72: MagicDrive-V2 XL (1152 / 16 heads)
@pytest.mark.parametrize("backend", available_backends(torch.device("cuda"), torch.bfloat16)
                         if torch.cuda.is_available() else [])
def test_backend_matches_reference_forward_and_backward(backend, head_dim):
    q, k, v = _qkv(head_dim)
    scale = head_dim ** -0.5
    qb, kb, vb = (t.bfloat16().requires_grad_(True) for t in (q, k, v))
    out = attention(qb, kb, vb, scale, backend)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _reference(q, k, v, scale), **TOL)
    qr = q.clone().requires_grad_(True)
    _reference(qr, k, v, scale).sum().backward()
    out.float().sum().backward()
    torch.testing.assert_close(qb.grad.float(), qr.grad, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("kernel", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION"])
def test_sdpa_kernels_match_reference(kernel):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _qkv(72, n=5300 // 8)
    with sdpa_kernel(getattr(SDPBackend, kernel)):  # only this kernel: an unsupported case raises
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 72 ** -0.5, "sdpa")
    torch.testing.assert_close(out.float(), _reference(q, k, v, 72 ** -0.5), **TOL)
