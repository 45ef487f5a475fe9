"""The typed study config, setup, measurement, the signal gate and the plan; and the studies that read other
studies' runs: across models, across split seeds, across planted families."""
