"""Run onnx's own BackendTest node tests for quantized ops through accel's ONNX backend.

The expected outputs are the ones the onnx test cases carry (onnx's reference
implementation). Every quantized node test of a supported op runs; the ones left out are
listed in EXCLUDED with the reason.
"""

import unittest

import onnx.backend.test

import accel.onnx_backend

# Quantized node tests accel runs (regular expressions on the test names).
INCLUDED = [
    r"test_qlinearmatmul_(2D|3D)_(int8|uint8)_(float32|float16)_cpu",
    r"test_qlinearconv_cpu",
    r"test_matmulinteger_cpu",
    r"test_convinteger_(with|without)_padding_cpu",
    r"test_quantizelinear_cpu",
    r"test_quantizelinear_axis_cpu",
    r"test_dequantizelinear_cpu",
    r"test_dequantizelinear_axis_cpu",
]

# Quantized node tests for ops accel has, left out, with the reason.
EXCLUDED = {
    "test_quantizelinear_e4m3fn": "float8 e4m3fn output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_e5m2": "float8 e5m2 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_float4e2m1": "float4 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_int16": "int16 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_uint16": "uint16 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_int4": "int4 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_uint4": "uint4 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_int2": "int2 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_uint2": "uint2 output; accel quantizes to int8/uint8 only",
    "test_quantizelinear_blocked_asymmetric": "blocked quantization (block_size > 0) is not supported",
    "test_quantizelinear_blocked_symmetric": "blocked quantization (block_size > 0) is not supported",
    "test_dequantizelinear_e4m3fn": "float8 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_e4m3fn_float16": "float8 input, float16 output; accel dequantizes int8/uint8 to float32",
    "test_dequantizelinear_e4m3fn_zero_point": "float8 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_e5m2": "float8 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_float4e2m1": "float4 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_int16": "int16 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_uint16": "uint16 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_int4": "int4 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_uint4": "uint4 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_int2": "int2 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_uint2": "uint2 input; accel dequantizes int8/uint8 only",
    "test_dequantizelinear_blocked": "blocked quantization (block_size > 0) is not supported",
    "test_dynamicquantizelinear": "DynamicQuantizeLinear computes scales at run time; accel's scales are compile-time",
    "test_dynamicquantizelinear_expanded": "DynamicQuantizeLinear computes scales at run time",
    "test_dynamicquantizelinear_max_adjusted": "DynamicQuantizeLinear computes scales at run time",
    "test_dynamicquantizelinear_max_adjusted_expanded": "DynamicQuantizeLinear computes scales at run time",
    "test_dynamicquantizelinear_min_adjusted": "DynamicQuantizeLinear computes scales at run time",
    "test_dynamicquantizelinear_min_adjusted_expanded": "DynamicQuantizeLinear computes scales at run time",
}

backend_test = onnx.backend.test.BackendTest(accel.onnx_backend, __name__)
for pattern in INCLUDED:
    backend_test.include(pattern)



def _only_included(cases):
    """Drop the thousands of non-quantized onnx tests instead of reporting them as skipped."""
    import re
    kept = {}
    for name, case in cases.items():
        for attr in [a for a in dir(case) if a.startswith("test_")]:
            if not any(re.fullmatch(p, attr) for p in INCLUDED):
                delattr(case, attr)
        if any(a.startswith("test_") for a in dir(case)):
            kept[name] = case
    return kept


globals().update(_only_included(backend_test.test_cases))


def test_every_quantized_node_test_is_run_or_excluded_with_a_reason():
    import re
    from onnx.backend.test.case.node import collect_testcases

    names = {c.name for c in collect_testcases(None)
             if re.match(r"test_(qlinear|matmulinteger|convinteger|quantizelinear|dequantizelinear|dynamicquantizelinear)", c.name)}
    included = {n for n in names if any(re.fullmatch(p, n + "_cpu") for p in INCLUDED)}
    assert len([n for n in included if n.startswith("test_qlinearmatmul_")]) == 8
    assert names - included == set(EXCLUDED), sorted((names - included) ^ set(EXCLUDED))
    assert not included & set(EXCLUDED)


if __name__ == "__main__":
    unittest.main()
