"""Multiply-adds of an ONNX graph on a given input, and this machine's practical matrix-multiply peak.

`graph_macs` counts the multiply-adds of every MatMul, Gemm and Conv node from the shapes they actually see:
the graph is run once by onnxruntime with those nodes' inputs and outputs exposed as graph outputs (shape
inference alone cannot resolve the dynamo exporter's dynamic reshapes). Elementwise work (norms, GELU,
softmax) is left out: it is small next to the products and bound by memory, not arithmetic.

`matmul_peak` times a one-node MatMul (fp32) and MatMulInteger (uint8 x int8, what dynamic int8 runs) graph
at several shapes with onnxruntime's default threads, and numpy's fp32 matmul (its BLAS) at the same shapes,
and keeps the best rate of each precision: the "practical peak" that segments are compared with, measured in
the same run as the segments. A peak is what the machine can do undisturbed, so each shape's rate comes from
its fastest run (segments are given as medians: their share of the peak errs low on a noisy machine). Shapes: the blocks' projections (149 frames x 768 x 3072), a convolution's
frames-times-kernel product (4800 x 1536 x 512), and squares.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PRODUCT_OPS = {"MatMul", "Gemm", "Conv", "MatMulInteger", "ConvInteger"}
PEAK_SHAPES = ((149, 768, 3072), (149, 3072, 768), (4800, 1536, 512), (512, 512, 512), (1024, 1024, 1024),
               (2048, 2048, 2048))


def graph_macs(path: Path, value: np.ndarray) -> int:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {t.name: tuple(t.dims) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in PRODUCT_OPS]
    known = {o.name for o in graph.output}
    wanted = []
    for node in nodes:
        for name in (node.input[0], node.input[1], node.output[0]):
            if name and name not in initializers and name not in known and name not in wanted:
                wanted.append(name)
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in wanted)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # count the nodes as exported
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = dict(zip(names, (a.shape for a in session.run(names, {session.get_inputs()[0].name: value})), strict=True))
    shapes |= initializers
    macs = 0
    for node in nodes:
        out = shapes[node.output[0]]
        if node.op_type in ("Conv", "ConvInteger"):
            weight = shapes[node.input[1]]  # (out channels, in channels / groups, *kernel)
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
        else:
            macs += int(np.prod(out)) * int(shapes[node.input[0]][-1])
    return macs


def _one_node(op: str, m: int, k: int, n: int):
    import onnx
    from onnx import TensorProto, helper

    a_type, b_type, out_type = ((TensorProto.FLOAT,) * 3 if op == "MatMul"
                                else (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32))
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], op,
        [helper.make_tensor_value_info("a", a_type, [m, k]), helper.make_tensor_value_info("b", b_type, [k, n])],
        [helper.make_tensor_value_info("y", out_type, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def matmul_peak(repeats: int = 10) -> dict:
    """Best G multiply-adds per second over PEAK_SHAPES, per precision, with every shape's rate."""
    import onnxruntime as ort

    import common

    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    runs, sizes = {}, {}
    for precision, op in (("fp32", "MatMul"), ("int8", "MatMulInteger")):
        for m, k, n in PEAK_SHAPES:
            session = ort.InferenceSession(_one_node(op, m, k, n), options, providers=["CPUExecutionProvider"])
            if precision == "fp32":
                feed = {"a": rng.standard_normal((m, k), np.float32), "b": rng.standard_normal((k, n), np.float32)}
            else:
                feed = {"a": rng.integers(0, 255, (m, k), np.uint8), "b": rng.integers(-127, 127, (k, n), np.int8)}
            key = f"{precision} {m}x{k}x{n}"
            runs[key] = lambda s=session, f=feed: s.run(None, f)
            sizes[key] = m * k * n
            if precision == "fp32":
                runs[f"fp32 numpy {m}x{k}x{n}"] = lambda f=feed: f["a"] @ f["b"]
                sizes[f"fp32 numpy {m}x{k}x{n}"] = m * k * n
    times = common.interleaved(runs, repeats)
    rates = {key: sizes[key] / float(np.min(ms)) / 1e6 for key, ms in times.items()}
    peak = {}
    for precision in ("fp32", "int8"):
        mine = {key.split(" ", 1)[1]: rate for key, rate in rates.items() if key.startswith(precision)}
        best = max(mine, key=mine.get)
        peak[precision] = {"best_gmacs_per_s": mine[best], "best_shape": best, "gmacs_per_s": mine}
    return peak
