# Generate with a CoReDiT-pruned MagicDrive-V2 in its own test layout (gen_video/, gt_video/) for tools/eval_bev.py:
# 30 steps, CFG 2.0, the plan from fine-tuning, the last 4 steps at c * r_l.
#
#   export MAGICDRIVE_V2_ROOT=/path/to/MagicDrive-V2
#   torchrun --nproc_per_node 8 tools/generate.py configs/magicdrive_coredit_test.py
#
# tools/generate.py registers CoReDiT's scheduler and runs MagicDrive-V2's own scripts/test_magicdrive.py.
_base_ = [
    "{{$MAGICDRIVE_V2_ROOT:../MagicDrive-V2}}/configs/magicdrive/test/"
    "17-16x848x1600_stdit3_CogVAE_boxTDS_wCT_xCE_wSST_map0_fsp8_cfg2.0.py"
]
coredit_runner = "magicdrive_v2"
save_mode = "single-view"

scheduler = dict(
    type="coredit_rflow",
    use_timestep_transform=True,
    cog_style_trans=True,
    num_sampling_steps=30,
    cfg_scale=2.0,
    # the plan written by fine-tuning (configs/magicdrive_coredit.py: scheduler.state_dir)
    prune=dict(plan="{{$COREDIT_PLAN:outputs/coredit_state/plan.json}}", late_factor=0.25, late_steps=4, bands=8),
    train_schedule=False,
)
