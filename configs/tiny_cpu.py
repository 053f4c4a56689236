# Embedded default: the built-in tiny host on synthetic multi-view driving videos, SP=2 on CPU (gloo).
#   torchrun --nproc_per_node 2 tools/train.py configs/tiny_cpu.py
work_dir = "work_dirs/tiny_cpu"
seed = 0

model = dict(type="builtin", preset="tiny", views=6, in_channels=4, cond_dim=32)
data = dict(
    type="synthetic",
    num_samples=16,
    views=6,
    frames=4,
    image_hw=(64, 112),  # latents 32x56 -> 16x28 tokens per frame
    seed=0,
    cond_dim=32,
    codec=dict(latent_channels=4, factor=2),
)
parallel = dict(sp_size=2)
prune = dict(
    ratios=0.0,
    max_ratio=0.5,
    late_factor=0.25,
    late_steps=4,
    stride=3,
    bands=2,
)
schedule = dict(delta_ratio=0.05, interval=3, target_ratio=0.26)  # capped by prune.max_ratio
rflow = dict(num_sampling_steps=30, cfg_scale=2.0, use_timestep_transform=True, frame_rule="clamp")
distill = dict(enabled=True, alpha=0.5, beta=0.5)
optim = dict(lr=2e-4, weight_decay=0.0, grad_clip=1.0, zero_stage=2, precision="fp32")
train = dict(steps=60, micro_batch=1, grad_accum=1, ckpt_every=20, keep_last=2, log_every=5, ema_decay=0.99)
