"""minGRU (Feng et al. 2024, eq. for minGRU):

    z_t = sigmoid(Linear(x_t)),  h~_t = Linear(x_t)   (g(h~_t) in log space)
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

Three paths: naive (`reference.naive_min_rnn`, a loop over t), fast
(`MinRNN.forward`, one zoo-kernels scan) and `MinRNN.step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from zoo_mingru.common import MinRNN, MinRNNConfig


@dataclass
class MinGRUConfig(MinRNNConfig):
    pass


class MinGRU(MinRNN):
    n_gates = 1
    label = "mingru"

    def log_coefficients(self, gates):
        # log z = logsigmoid(k) and log(1 - z) = log z - k: no sigmoid that rounds to 0 or 1,
        # and one transcendental pass (with its backward) instead of two softplus
        log_z = F.logsigmoid(gates)
        return log_z - gates, log_z
