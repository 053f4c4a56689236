# The embedded default on the second host: the varied world and the host pre-trained on it
# (coredit_video/embedded/host/weights/embedded_tiny_varied.pt, made by configs/embedded_pretrain_varied.py).
# Everything else as configs/tiny_cpu.py. Take it as a front's or a study's host:
#   python tools/front.py --config configs/tiny_cpu_varied.py ...
_base_ = ["./tiny_cpu.py"]
work_dir = "work_dirs/tiny_cpu_varied"
data = dict(appearance="varied")
train = dict(init_from="embedded_tiny_varied")
