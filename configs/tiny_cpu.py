# Embedded default: CoReDiT fine-tuning of the pre-trained built-in tiny host (shipped with the project, like
# MagicDrive-V2's stage-3 checkpoint) on synthetic multi-view driving videos, SP=2 on CPU (gloo).
#   torchrun --nproc_per_node 2 tools/train.py configs/tiny_cpu.py
_base_ = ["./_base_/embedded_world.py"]
work_dir = "work_dirs/tiny_cpu"
seed = 0

data = dict(num_samples=1000)  # the world (seed) the shipped host was pre-trained on
parallel = dict(sp_size=2)
prune = dict(
    # the paper's rule (eq. 3), kept for reproduction; coredit_merge (runs under SP) or tome (ToMe with proportional
    # attention, no SP) keep more fidelity, and fewer sampling steps more still on this host (docs/quality.md)
    method="coredit",
    ratios=0.0,
    max_ratio=0.5,
    late_factor=0.25,
    late_steps=4,
    stride=3,
    bands=2,
)
schedule = dict(delta_ratio=0.05, interval=3, target_ratio=0.26)  # capped by prune.max_ratio
distill = dict(enabled=True, alpha=0.5, beta=0.5)
optim = dict(lr=2e-4, weight_decay=0.0, grad_clip=1.0, zero_stage=2, precision="fp32")
# init_from: the shipped pre-trained host (coredit_video/embedded/host/weights/embedded_tiny.pt,
# built by configs/embedded_pretrain.py)
train = dict(steps=72, micro_batch=1, grad_accum=1, ckpt_every=24, keep_last=2, log_every=6, ema_decay=0.95,
             init_from="embedded")
