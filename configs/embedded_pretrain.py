# Dense pre-training of the embedded host (the built-in "tiny" preset) on the synthetic world: the
# stand-in for MagicDrive-V2's released stage-3 checkpoint that the embedded main job fine-tunes from.
# No pruning (target ratio 0), no distillation; DP=2 on 2 CPU processes; resumable.
#   torchrun --nproc_per_node 2 tools/train.py configs/embedded_pretrain.py --resume auto
#   python tools/export_host.py configs/embedded_pretrain.py      # EMA weights -> coredit_video/embedded/...
work_dir = "work_dirs/embedded_pretrain"
seed = 0

model = dict(type="builtin", preset="tiny", views=6, in_channels=4, cond_dim=32)
data = dict(
    type="synthetic",
    num_samples=200000,  # rendered lazily; the run sees each scene at most once
    views=6,
    frames=2,
    image_hw=(64, 112),  # latents 32x56 -> 16x28 tokens per frame
    seed=0,
    cond_dim=32,
    codec=dict(latent_channels=4, factor=2),
)
parallel = dict(sp_size=1)
prune = dict(ratios=0.0, max_ratio=0.5, late_factor=0.25, late_steps=4, stride=3, bands=2)
schedule = dict(delta_ratio=0.05, interval=3, max_ratio=0.5, target_ratio=0.0)
# MagicDrive-V2 shifts t by sqrt(H*W / base_resolution) (base 512x512); the embedded world's base is its own
# 64x112, so its videos train and sample over the whole noise range (a 512x512 base would put 96% of the training
# times in the less noisy half, where the layout and the boxes are no longer decided)
rflow = dict(num_sampling_steps=30, cfg_scale=2.0, use_timestep_transform=True, frame_rule="clamp",
             base_resolution=64 * 112)
distill = dict(enabled=False)
optim = dict(lr=1e-3, weight_decay=0.0, grad_clip=1.0, zero_stage=2, precision="fp32", warmup_steps=100)
train = dict(steps=5000, micro_batch=1, grad_accum=1, ckpt_every=250, keep_last=2, log_every=25, ema_decay=0.999,
             cond_drop=0.1)
