"""Hold the engines behind ``accel.open_device`` and the simulation infrastructure.

* ``golden``: the canonical graph executed in NumPy, bit-identical to onnxruntime;
* ``emulator``: the ``emu`` device, compiled programs executed instruction by instruction;
* ``rtl`` and ``rtl_host``: the ``rtl`` device, a resident Verilator simulation of
  ``AcceleratorCore`` driven through its host byte stream;
* ``verilator``: cached Verilator builds and cocotb runs of Amaranth designs.
"""
