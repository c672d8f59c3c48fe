"""Calibration: measurements from the trainer and microbenchmarks refit the simulator."""
