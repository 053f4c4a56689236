# Stage 2 of the embedded host's dense pre-training: stage 1's EMA (configs/embedded_pretrain.py, exported by
# tools/pretrain_host.sh) gains the view-layout input (zero-initialised, so it starts as stage 1) and trains on.
# Its EMA is the shipped host. Resumable:
#   torchrun --nproc_per_node 2 tools/train.py configs/embedded_pretrain_layout.py --resume auto
_base_ = ["./embedded_pretrain.py"]
work_dir = "work_dirs/embedded_pretrain_layout"
seed = 1  # another training-sample order than stage 1 (the held-out scenes come from another world seed anyway)
model = dict(view_layout_channels=15)
optim = dict(lr=5e-4, warmup_steps=50)
train = dict(steps=5000, init_from="work_dirs/embedded_pretrain/embedded_tiny_stage1.pt")
