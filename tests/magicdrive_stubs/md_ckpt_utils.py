"""Stand-in for ``magicdrivedit.utils.ckpt_utils``, registered under that name by the test.

The real module imports colossalai's booster and MagicDrive-V2's training stack; the model file only
imports ``load_checkpoint`` from it, for ``from_pretrained`` paths the tests never take.
"""


def load_checkpoint(*args, **kwargs):
    raise RuntimeError("loading MagicDrive-V2 checkpoints is not available with the test stand-ins")
