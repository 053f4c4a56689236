# Evaluation of the embedded default: built-in perception on the synthetic domain, native resolution.
#   python tools/eval_bev.py work_dirs/tiny_cpu/videos/dense work_dirs/tiny_cpu/videos/pruned \
#       --config configs/eval_tiny_cpu.py --names dense pruned --ratios 0 auto
protocol = dict(
    target_hw=(64, 112),  # generated at the dataset's size: nothing to undo
    generation_hw=(64, 112),
    key_frames=(0, 1),
    fvd_resize_hw=(64, 112),
    fvd_crop_hw=(64, 112),
)
perception = dict(type="synthetic")
# the synthetic samples the videos were generated from (tools/generate.py: data.seed + seed_offset)
# nuscenes_dir: the samples are written there as a nuScenes-format dataset (13 tables, map, map expansion)
# and the devkit reads the detection ground truth back from it
data = dict(train_config="configs/tiny_cpu.py", num_samples=2, seed_offset=1000,
            nuscenes_dir="work_dirs/tiny_cpu/nuscenes_synthetic")
