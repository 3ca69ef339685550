"""minGRU and minLSTM (Feng et al. 2024, arXiv 2410.01201), the two min-RNN cells:

    minGRU:  z_t = sigmoid(Linear(x_t)),  h~_t = Linear(x_t)   (g(h~_t) in log space)
             h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM: f_t = sigmoid(Linear(x_t)),  i_t = sigmoid(Linear(x_t)),  h~_t = Linear(x_t)
             f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
             h_t = f'_t * h_{t-1} + i'_t * h~_t      (g(h~_t) in log space)

Each cell only says how its gate pre-activations give log a_t and log w_t; everything else
(projections, conv, output gate, the three paths, documents) is `common.MinRNN`. Three
paths: naive (`reference.naive_min_rnn`, a loop over t), fast (`MinRNN.forward`, one
zoo-kernels scan) and `MinRNN.step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from zoo_mingru.common import MinRNN, MinRNNConfig


@dataclass
class MinGRUConfig(MinRNNConfig):
    """minGRU's options: those of every min-RNN (common.MinRNNConfig)."""


@dataclass
class MinLSTMConfig(MinRNNConfig):
    """minLSTM's options: those of every min-RNN (common.MinRNNConfig)."""


class MinGRU(MinRNN):
    n_gates, label = 1, "mingru"

    def log_coefficients(self, gates):
        # log z = logsigmoid(k) and log(1 - z) = log z - k: no sigmoid that rounds to 0 or 1,
        # and one transcendental pass (with its backward) instead of two softplus
        log_z = F.logsigmoid(gates)
        return log_z - gates, log_z


class MinLSTM(MinRNN):
    n_gates, label = 2, "minlstm"

    def log_coefficients(self, gates):
        f_pre, i_pre = gates.chunk(2, dim=-1)
        # f' = f / (f + i) = sigmoid(log f - log i); in logs, no 0/0 when both gates underflow
        diff = F.logsigmoid(f_pre) - F.logsigmoid(i_pre)  # log f - log i
        log_f = F.logsigmoid(diff)
        return log_f, log_f - diff  # log(1 - f') = log f' - diff
