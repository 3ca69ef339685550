"""minLSTM lives beside minGRU in `zoo_mingru.mingru` (the cells share everything but their
gates); this module keeps the import path `zoo_mingru.minlstm` working."""

from zoo_mingru.mingru import MinLSTM, MinLSTMConfig

__all__ = ["MinLSTM", "MinLSTMConfig"]
