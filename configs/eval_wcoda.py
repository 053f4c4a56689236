# W-CODA 2024 Track 2 protocol for MagicDrive-V2 videos (848x1600 -> 900x1600, frames 0/6/12) with the
# user's BEVFormer seg+det fork run in its own environment. Fill in the paths (or use --cfg-options).
#   python tools/eval_bev.py outputs/dense_videos outputs/coredit_videos --config configs/eval_wcoda.py \
#       --names MagicDrive-V2 CoReDiT --ratios 0 0.26
protocol = dict()  # every key of coredit_video.evaluation.protocol.EvalProtocol; defaults are W-CODA's
perception = dict(
    type="bevformer",
    repo="{{$BEVFORMER_ROOT:../BEVFormer}}",
    config="projects/configs/bevformer/bevformer_base_seg_det_150x150.py",
    checkpoint="ckpts/bevformer_base_seg_det_150.pth",
    python="{{$BEVFORMER_PYTHON:python}}",
    info="{{$NUSCENES_ROOT:data/nuscenes}}/nuscenes_infos_temporal_val.pkl",
    nusc_dataroot="{{$NUSCENES_ROOT:data/nuscenes}}",
    nusc_version="v1.0-trainval",
)
