"""leadscore: settings, data contracts and the pieces shared by training and serving."""

import os

# OpenMP threads that busy-wait make LightGBM 4-20x slower on shared cores (measured: 36 s
# instead of 1.6 s to fit 250 trees while another process held a core). It is read once, when
# the OpenMP runtime starts, so it is set before anything imports LightGBM.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
