"""The embedded world: everything the CPU default runs on instead of a real MagicDrive-V2 stack.

- :mod:`.host`: the built-in MagicDrive-shaped host (``MultiViewSTDiT``), its adapter, its pre-trained weights
  (``host/weights``) and the trainer's bundle for it (``host/bundle.py``, ``model.type="builtin"``);
- :mod:`.world`: the procedural multi-view driving world (scenes, cameras, rendering, BEV maps, conditions,
  nuScenes-format export);
- :mod:`.codec`: the toy latent codec standing in for the video VAE;
- :mod:`.perception`: the built-in perception model and its scoring (mAP, BEV mIoU).

The plugin (ops, attention, controller, adapters, ...) never imports this package; the tools wire it in.
"""
