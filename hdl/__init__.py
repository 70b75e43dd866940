"""Hold the accelerator's Amaranth HDL: PEs, the systolic array, buffers, post-processing and controller.

Every block is a ``lib.wiring.Component`` with stream interfaces, built from one frozen
hardware configuration passed explicitly. The first hardware lands with the
first-hardware-path issue; for now the package holds the toolchain smoke-test design.
"""
