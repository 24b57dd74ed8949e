"""The build wing: everything ``dpa-build`` does to turn an ONNX detector into an engine folder.

One job per module, in the order a build runs them (:mod:`.engine_dir` strings them together):

- :mod:`.model_detect`: the model's :class:`~dpa_perception.core.model_spec.ModelSpec` from the ONNX
  file, a description file beside it or Ultralytics metadata (``detect_spec``, ``load_onnx``)
- :mod:`.calibration`: calibration frames from an image folder or a rosbag2, the held-out split
- :mod:`.prepare`: the high-precision variant with symbolic dims, verified by running it
- :mod:`.quantize`: QDQ INT8 quantization (one cached calibration for every variant)
- :mod:`.sensitivity`: quantizable units and the error of each quantized alone
- :mod:`.evaluate`: a variant against the high-precision reference (``Evaluator``)
- :mod:`.metrics`: detection agreement (IoU matching, recall, precision, F1)
- :mod:`.plan`: the mixed-precision plan search (most sensitive layers vs contiguous prefix)
- :mod:`.timing`: interleaved latency of variants
- :mod:`.score_offset`: the INT8 score offset that re-aligns scores with high precision
- :mod:`.rect`: the rect input shape against square
- :mod:`.report`: ``precision_report.json`` / ``.png``
- :mod:`.publish`: ``--out`` checked up front, the atomic rename swap, what killed builds left
- :mod:`.engine_dir`: ``BuildOptions`` and the build, step by step, published atomically
"""
