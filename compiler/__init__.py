"""Turn ONNX models into accel's canonical quantized graph, and later into accelerator programs.

``accel.compiler.ir`` defines the canonical graph, ``accel.compiler.frontend`` imports QDQ
and QOperator ONNX models into it, and ``accel.compiler.passes`` holds the small named
passes that normalize it. Tiling, memory planning and program emission for the systolic
array join them with the hardware issues.
"""
