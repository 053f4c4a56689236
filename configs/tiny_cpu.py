# Embedded default: CoReDiT fine-tuning of the pre-trained built-in tiny host (shipped with the project, like
# MagicDrive-V2's stage-3 checkpoint) on synthetic multi-view driving videos, SP=2 on CPU (gloo).
#   torchrun --nproc_per_node 2 tools/train.py configs/tiny_cpu.py
work_dir = "work_dirs/tiny_cpu"
seed = 0

model = dict(type="builtin", preset="tiny", views=6, in_channels=4, cond_dim=32)
data = dict(
    type="synthetic",
    num_samples=1000,  # rendered lazily; the same world (seed) the shipped host was pre-trained on
    views=6,
    frames=2,
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
schedule = dict(delta_ratio=0.05, interval=3, max_ratio=0.5, target_ratio=0.26)
# MagicDrive-V2 shifts t by sqrt(H*W / base_resolution) (base 512x512); the embedded world's base is its own
# 64x112, so its videos train and sample over the whole noise range (a 512x512 base would put 96% of the training
# times in the less noisy half, where the layout and the boxes are no longer decided)
rflow = dict(num_sampling_steps=30, cfg_scale=2.0, use_timestep_transform=True, frame_rule="clamp",
             base_resolution=64 * 112)
distill = dict(enabled=True, alpha=0.5, beta=0.5)
optim = dict(lr=2e-4, weight_decay=0.0, grad_clip=1.0, zero_stage=2, precision="fp32")
# init_from: the shipped pre-trained host (coredit_video/models/weights/embedded_tiny.pt, configs/embedded_pretrain.py)
train = dict(steps=72, micro_batch=1, grad_accum=1, ckpt_every=24, keep_last=2, log_every=6, ema_decay=0.95,
             init_from="embedded")
