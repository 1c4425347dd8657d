"""Dtype vocabulary of the checkpoint formats, mapped to torch's own names (without `torch.`),
and what makes a shape one torch can hold.

Kept free of torch so that reading a checkpoint or a signature file never needs it.
"""

from __future__ import annotations

from typing import Iterable

# torch's canonical dtype name -> bytes per element (the sub-byte dtypes take one byte each,
# as torch's own `itemsize` says)
ITEMSIZE: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "complex128": 16, "complex64": 8, "complex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
    **{f"{sign}int{bits}": 1 for sign in ("", "u") for bits in range(1, 8)},
}
# what a signature file says for a non-tensor entry a module saves (`_extra_state`)
OBJECT = "object"

# torch attribute names that are aliases of a canonical dtype (`torch.float` is float32)
ALIASES: dict[str, str] = {
    "float": "float32", "double": "float64", "half": "float16", "cfloat": "complex64",
    "cdouble": "complex128", "chalf": "complex32", "long": "int64", "int": "int32",
    "short": "int16",
}

# the legacy `torch.<Name>Storage` classes torch.save names in its persistent ids
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}

# safetensors' dtype codes (the `dtype` field of its JSON header) that both its Rust reader
# (safetensors 0.8) and torch know; F4/F6 have no torch dtype and C128 no safetensors code
SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu", "C64": "complex64",
}

# torch keeps sizes and byte counts in int64: a bigger dimension or storage cannot be built,
# not even on the meta device ("Storage size calculation overflowed")
MAX_SIZE = 2**63 - 1
# more dimensions than any real tensor has; also bounds the work one shape can cost
MAX_DIMS = 64


def torch_dtype(name: str) -> str | None:
    """The canonical name of a `torch.<name>` dtype attribute, or None if it is not one."""
    name = ALIASES.get(name, name)
    return name if name in ITEMSIZE else None


def shape_problem(dtype: str, shape: Iterable[int]) -> str | None:
    """Why torch could not hold a tensor of this dtype and shape, or None when it can.

    The dimensions must be integers already; the answer is a phrase such as "has 70
    dimensions (at most 64)".
    """
    dims = tuple(shape)
    if len(dims) > MAX_DIMS:
        return f"has {len(dims)} dimensions (torch tensors here have at most {MAX_DIMS})"
    if any(d < 0 for d in dims):
        return f"has a negative size {list(dims)}"
    if any(d > MAX_SIZE for d in dims):
        return f"has a dimension larger than torch's int64 sizes allow ({max(dims)})"
    numel = 1
    for d in dims:
        numel *= d
    if numel * ITEMSIZE.get(dtype, 1) > MAX_SIZE:
        return f"would take more than 2**63 bytes ({list(dims)}), which torch cannot allocate"
    return None
