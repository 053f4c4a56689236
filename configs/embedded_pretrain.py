# Stage 1 of the embedded host's dense pre-training (the built-in "tiny" preset, without its view-layout input)
# on the synthetic world; stage 2 (configs/embedded_pretrain_layout.py) adds the view layout and gives the shipped
# host, the stand-in for MagicDrive-V2's released stage-3 checkpoint. No pruning (target ratio 0), no
# distillation; DP=2 on 2 CPU processes; resumable. Both stages and the export: bash tools/pretrain_host.sh
_base_ = ["./_base_/embedded_world.py"]
model = dict(view_layout_channels=0)
work_dir = "work_dirs/embedded_pretrain"
seed = 0

data = dict(num_samples=200000)  # fresh scenes: the run sees each at most once
parallel = dict(sp_size=1)
prune = dict(ratios=0.0, max_ratio=0.5, late_factor=0.25, late_steps=4, stride=3, bands=2)
schedule = dict(delta_ratio=0.05, interval=3, target_ratio=0.0)
distill = dict(enabled=False)
optim = dict(lr=1e-3, weight_decay=0.0, grad_clip=1.0, zero_stage=2, precision="fp32", warmup_steps=100)
train = dict(steps=5000, micro_batch=1, grad_accum=1, ckpt_every=250, keep_last=2, log_every=25, ema_decay=0.999,
             cond_drop=0.1)
