"""The Triton kernels (scans, Mamba-1's selective scan, Mamba-2's SSD) compile to a Hopper
(sm_90) binary, no GPU needed.

The interpreter checks what the kernels compute but not that the real compiler
accepts them. This compiles each kernel ahead of time with triton's bundled
ptxas, in a subprocess because this test session runs triton interpreted.
"""

import os
import subprocess
import sys

import pytest

from zoo_kernels.backends import triton_installed

pytestmark = pytest.mark.skipif(not triton_installed(), reason="triton is not importable")

COMPILE_ALL = r"""
import sys
import triton
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as err:
    print("SKIP no ahead-of-time compile API:", err); sys.exit(0)
from zoo_kernels.rglru import triton as trg
from zoo_kernels.scan import triton as ts
from zoo_kernels.selective import triton as tsel
from zoo_kernels.ssd import triton as tssd

SCALARS = {"T": "i32", "D": "i32", "c": "fp32", "N": "i32", "NT": "i32", "NB": "i32"}
SCAN = {"BT": ts.BLOCK_T, "BD": ts.BLOCK_D, "num_warps": ts.NUM_WARPS}
# the fused selective scan at mamba's N = 16, and at the largest N it takes (its channel block shrunk to 1)
SEL = {"BT": tsel.BLOCK_T, "BD": tsel._blocks(1536, 16)[1], "BN": 16, "num_warps": tsel.NUM_WARPS}
SEL_BIG_N = {**SEL, "BD": tsel._blocks(1536, 256)[1], "BN": 256}
BF16_SEL = {"U": "*bf16", "DT": "*bf16", "B": "*bf16", "C": "*bf16"}
CASES = [
    (ts._scan_fwd_kernel, {"A": "*bf16", "X": "*bf16", "H": "*bf16"}, {"HAS_H0": True, "LOG": False}, SCAN),
    (ts._scan_fwd_kernel, {}, {"HAS_H0": False, "LOG": True}, SCAN),
    (ts._scan_bwd_kernel, {}, {"HAS_H0": True, "HAS_DA": True}, SCAN),
    (
        trg._rg_lru_fwd_kernel,
        {"X": "*bf16", "RP": "*bf16", "IP": "*bf16", "H": "*bf16", "RS": "*u8"},
        {"HAS_H0": True, "HAS_RS": True},
        SCAN,
    ),
    (trg._rg_lru_bwd_kernel, {"RS": "*u8"}, {"HAS_H0": True, "HAS_RS": True}, SCAN),
    (tsel._ss_kernel, {**BF16_SEL, "OUT": "*bf16"}, {"GRAD": False, "HAS_HS": True}, SEL),
    (tsel._ss_kernel, {}, {"GRAD": False, "HAS_HS": False}, SEL_BIG_N),
    (tsel._ss_kernel, {**BF16_SEL, "GY": "*bf16", "OUT": "*bf16", "DDT": "*bf16"}, {"GRAD": True, "HAS_HS": True}, SEL),
    (tsel._ss_kernel, {}, {"GRAD": True, "HAS_HS": False}, SEL_BIG_N),
]
# the Mamba-2 SSD at headdim 64, chunk 64 and d_state 128 (two N blocks: the loops over N), in bf16 with
# fp32 dt (what the mixer passes; TF32 dots), and fp64 for the state kernels (fp64 dots). The fp32 and
# fp64 (IEEE) chunk scans compile too, but take 10-50 s each on the 2-core VM: not in the suite.
SSD_SCALARS = {n: "i32" for n in ("T", "H", "P", "N", "L", "NC", "HPG", "PN")}
SSD = {**tssd.blocks(64, 128, 64), "BS": tssd.BLOCK_S, "num_warps": tssd.NUM_WARPS}
BF16_SSD = {n: "*bf16" for n in ("X", "B", "C", "OUT", "GY")}
F64_SSD = {n: "*fp64" for n in ("X", "DT", "A", "Y", "OUT", "S", "H0", "HIN", "HL")}
TF32 = {"F64": False, "PREC": "tf32"}
SSD_CASES = [
    (tssd._chunk_state, BF16_SSD, {"GRAD": False, **TF32}, SSD),
    (tssd._chunk_state, F64_SSD, {"GRAD": True, "F64": True, "PREC": "ieee"}, SSD),
    (tssd._state_pass, {}, {"HAS_H0": True, "REVERSE": False, "F64": False}, SSD),
    (tssd._state_pass, F64_SSD, {"HAS_H0": False, "REVERSE": True, "F64": True}, SSD),
    (tssd._chunk_out, BF16_SSD, {"GRAD": False, **TF32}, SSD),
    (tssd._chunk_out, BF16_SSD, {"GRAD": True, **TF32}, SSD),
]
SSD_KERNELS = {case[0] for case in SSD_CASES}
CASES += SSD_CASES
for kernel, pointers, flags, blocks in CASES:
    consts = {**flags, **{k: v for k, v in blocks.items() if k != "num_warps" and k in kernel.arg_names}}
    scalars = SSD_SCALARS if kernel in SSD_KERNELS else SCALARS
    sig = {}
    for name in kernel.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in scalars or name.islower():  # strides are lower-case ints
            sig[name] = scalars.get(name, "i32")
        else:
            sig[name] = pointers.get(name, "*fp32")
    try:
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
    except TypeError as err:
        print("SKIP this triton's ASTSource takes other arguments:", err); sys.exit(0)
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": blocks["num_warps"]})
    assert len(out.asm["cubin"]) > 0, kernel.__name__
    print("compiled", kernel.__name__, flags)
"""


def test_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run([sys.executable, "-c", COMPILE_ALL], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.startswith("SKIP"):
        pytest.skip(done.stdout.strip())
    assert done.stdout.count("compiled") == 15, done.stdout
