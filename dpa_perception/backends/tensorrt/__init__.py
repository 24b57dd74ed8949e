"""TensorRT (GPU and DLA) for the dual-mode engine, as one subpackage.

profiles (optimisation profiles), features (what the installed ``tensorrt`` offers), plan (build
plans and placements), probe (this machine), key (engine keys and refusals), memory (device
memory), session (running an engine), fp16 (the FP16-typed ONNX pass), placement_report (where
layers ran), engine_build (one engine), builder (an engine folder's engines and the CLI options).
Nothing here imports ``tensorrt``, CUDA or ``onnx`` at module level.
"""
