"""Minimal safetensors reader (standard library + numpy): 8-byte little-endian header length, JSON header,
then the raw little-endian data. Used by the peer benchmarks so that the torch workloads need no extra package."""
import json
import struct

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def load(path):
    """Returns {name: numpy array} (copies, writable, C-contiguous)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start)
        out[name] = arr.reshape(info["shape"]).astype(dtype.newbyteorder("="), copy=True)
    return out
