"""Hold the accelerator's Amaranth HDL, built from one frozen HardwareConfig passed explicitly.

``pe`` and ``systolic`` (the weight-stationary array), ``requant`` (the integer
requantizer lanes), ``controller`` (fetch, decode, MATMUL sequencing), ``hostif`` (the
byte-stream host interface) and ``core`` (``AcceleratorCore``: memories plus all of them).
``smoke`` is the toolchain smoke-test MAC. Board tops live in :mod:`accel.boards`.
"""
