# The paper's recipe on MagicDrive-V2 (Table 4 row): fine-tune the released stage-3 model with CoReDiT,
# SP=8 on 8 GPUs (ColossalAI "zero2-seq", as MagicDrive-V2 trains), per-block cap 0.5, mean target 0.26,
# last 4 of 30 sampling steps at c * r_l.
#
#   export MAGICDRIVE_V2_ROOT=/path/to/MagicDrive-V2        # commit 4ed72c6, see third_party/README.md
#   torchrun --nproc_per_node 8 tools/train.py configs/magicdrive_coredit.py
#
# tools/train.py registers CoReDiT's scheduler in MagicDrive-V2's SCHEDULERS registry and runs MagicDrive-V2's
# own scripts/train_magicdrive.py with this config, so its data pipeline, VAE, text encoder, checkpointing and
# EMA are used unchanged. Paths below are relative to the MagicDrive-V2 checkout.
_base_ = [
    "{{$MAGICDRIVE_V2_ROOT:../MagicDrive-V2}}/configs/magicdrive/train/"
    "stage3_higher-b-v3.1-12Hz_stdit3_CogVAE_boxTDS_wCT_xCE_wSST_bs4_lr1e-5_sp4simu8.py"
]
coredit_runner = "magicdrive_v2"

sp_size = 8
plugin = "zero2-seq"  # ColossalAI, as MagicDrive-V2; DeepSpeed: use tools/train.py with a coredit config
# start from the released stage-3 weights (MagicDrive-V2 README: ckpts/MagicDriveDiT-stage3-40k-ft)
load = None
partial_load = "{{$MAGICDRIVE_V2_STAGE3:./ckpts/MagicDriveDiT-stage3-40k-ft}}"

# every rank's rows must be whole bands: pad H to a multiple of 8 always (no random simulate_sp_size 4)
model = dict(simulate_sp_size=[8], force_pad_h_for_sp_size=8)

scheduler = dict(
    type="coredit_rflow",
    use_timestep_transform=True,
    sample_method="logit-normal",
    num_sampling_steps=30,
    cfg_scale=2.0,
    # method: "coredit" is the paper's rule; the front (docs/quality.md) ranks "tome" (no SP) and "coredit_merge" (SP)
    # above it, and fewer sampling steps above both on the embedded host
    prune=dict(method="coredit", max_ratio=0.5, late_factor=0.25, late_steps=4, bands=8, stride=3,
               grids=(dict(grid=(8, 8), subgrid=(4, 4)), dict(grid=(6, 6), subgrid=(3, 3)))),
    schedule=dict(delta_ratio=0.02, interval=15, target_ratio=0.26),  # capped by prune.max_ratio
    distill=dict(enabled=False, alpha=0.5, beta=0.5),
    state_dir="outputs/coredit_state",
)
