"""minLSTM (Feng et al. 2024, eq. for minLSTM):

    f_t = sigmoid(Linear(x_t)),  i_t = sigmoid(Linear(x_t)),  h~_t = Linear(x_t)
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
    h_t = f'_t * h_{t-1} + i'_t * h~_t      (g(h~_t) in log space)

Three paths: naive (`reference.naive_min_rnn`, a loop over t), fast
(`MinRNN.forward`, one zoo-kernels scan) and `MinRNN.step`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from zoo_mingru.common import MinRNN, MinRNNConfig


@dataclass
class MinLSTMConfig(MinRNNConfig):
    pass


class MinLSTM(MinRNN):
    n_gates = 2
    label = "minlstm"

    def log_coefficients(self, gates):
        f_pre, i_pre = gates.chunk(2, dim=-1)
        # f' = f / (f + i) = sigmoid(log f - log i); in logs, no 0/0 when both gates underflow
        diff = F.logsigmoid(f_pre) - F.logsigmoid(i_pre)  # log f - log i
        log_f = F.logsigmoid(diff)
        return log_f, log_f - diff  # log(1 - f') = log f' - diff
