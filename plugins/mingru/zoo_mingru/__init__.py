"""zoo-mingru: registers the `mingru` and `minlstm` mixers."""

from zoo_core import hookimpl
from zoo_mingru.mingru import MinGRU, MinGRUConfig, MinLSTM, MinLSTMConfig

zoo_api = 1


@hookimpl
def register_mixers(register):
    register(
        "mingru",
        MinGRU,
        MinGRUConfig,
        "minGRU (Feng et al. 2024): h = (1-z) h + z h~, parallel scan, optional conv and output gate",
    )
    register(
        "minlstm",
        MinLSTM,
        MinLSTMConfig,
        "minLSTM (Feng et al. 2024): normalised forget/input gates, parallel scan, optional conv",
    )
