"""Hold the thin board top-levels (iCEBreaker, ULX3S-85F) and their build and flash flows.

Empty until the boards issue: each top will wrap the accelerator core with a PLL, a UART
host link and status LEDs on an amaranth-boards platform.
"""
