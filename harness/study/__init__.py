"""The typed study config, setup, measurement, the signal gate and the plan."""
