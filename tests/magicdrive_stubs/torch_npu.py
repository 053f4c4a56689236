"""Stand-in for ``torch_npu`` (Ascend). MagicDrive-V2 imports it on machines without CUDA; the tests
build models with flash attention off, so nothing in it is ever called."""
