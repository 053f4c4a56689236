# Dense pre-training of the embedded host (the built-in "tiny" preset) on the synthetic world: the
# stand-in for MagicDrive-V2's released stage-3 checkpoint that the embedded main job fine-tunes from.
# No pruning (target ratio 0), no distillation; DP=2 on 2 CPU processes; resumable.
#   torchrun --nproc_per_node 2 tools/train.py configs/embedded_pretrain.py --resume auto
#   python tools/export_host.py configs/embedded_pretrain.py  # -> coredit_video/embedded/host/weights/embedded_tiny.pt
_base_ = ["./_base_/embedded_world.py"]
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
