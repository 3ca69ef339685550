"""zoo-mamba: registers the `mamba` (selective scan) and `mamba2` (SSD) mixers and their
Hugging Face mappings (MambaForCausalLM, Mamba2ForCausalLM)."""

from zoo_core import hookimpl
from zoo_mamba.mamba1 import Mamba, MambaConfig
from zoo_mamba.mamba2 import Mamba2, Mamba2Config

zoo_api = 1


@hookimpl
def register_mixers(register):
    register(
        "mamba",
        Mamba,
        MambaConfig,
        "Mamba (Gu & Dao 2023): selective scan over a diagonal (d_inner x d_state) state, no MLP by default",
    )
    register(
        "mamba2",
        Mamba2,
        Mamba2Config,
        "Mamba-2 (Dao & Gu 2024): chunked state-space duality (SSD), scalar decay per head, gated RMSNorm",
    )


@hookimpl
def register_exports(register):
    from zoo_mamba.hf import Mamba2Mapping, MambaMapping

    register("mamba", MambaMapping, None, "mamba <-> transformers MambaForCausalLM")
    register("mamba2", Mamba2Mapping, None, "mamba2 <-> transformers Mamba2ForCausalLM (any ngroups, headdim)")
