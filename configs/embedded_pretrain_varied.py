# The second embedded host: the shipped host (configs/embedded_pretrain_layout.py) trained on in the varied world
# (data.appearance="varied": per-scene textures, lighting, weather, paint, skyline and sensor noise that the
# conditions do not give), so that its sampling flow curves as a real model's does (docs/embedded_host.md,
# "The varied host"). Same architecture and flow; dense, no pruning, no distillation; resumable:
#   bash tools/pretrain_host_varied.sh
_base_ = ["./embedded_pretrain_layout.py"]
work_dir = "work_dirs/embedded_pretrain_varied"
seed = 2  # another training-sample order than both stages of the shipped host
data = dict(appearance="varied")
optim = dict(lr=5e-4, warmup_steps=50)
train = dict(steps=4000, init_from="embedded")
