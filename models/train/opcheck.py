"""Is a .tflite model full-integer and wholly taken by LiteRT's XNNPACK delegate?  No TensorFlow.

Used by ``export.py`` (written into ``export.json``) and by ``tests/test_default_model.py`` on the
committed model.  Three checks:

- tensors: every tensor is int8, except int32 constants (biases, paddings, resize sizes) that no
  op produces; the graph's inputs and outputs are int8;
- ops: every op of the flatbuffer is one whose int8 form XNNPACK runs (``XNNPACK_INT8_OPS``);
- delegation: after ``allocate_tensors`` with LiteRT's default delegate, no original op is left
  on the reference kernels and there is exactly one ``DELEGATE`` node, reading the graph input
  and writing every graph output, so the execution plan is that one node.

The pure functions take the dicts of ``Interpreter._get_ops_details()`` /
``get_tensor_details()`` so that they can be tested on hand-made op lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Builtin ops XNNPACK's LiteRT delegate runs on signed int8 tensors (the same delegate code on
# x86 and ARM).  The camera model uses the first six; the rest are here so that a small change of
# architecture is not refused for nothing.  The delegation check below is the final word.
XNNPACK_INT8_OPS = frozenset(
    {
        "ADD",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "LOGISTIC",
        "PAD",
        "RESIZE_BILINEAR",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "DEPTH_TO_SPACE",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "LEAKY_RELU",
        "MAX_POOL_2D",
        "MEAN",
        "MUL",
        "RESHAPE",
        "SUB",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)


def _ints(values: Iterable[Any]) -> set[int]:
    return {int(v) for v in values if int(v) >= 0}  # -1: an optional input left out


def undelegated(ops: Sequence[Mapping[str, Any]], graph_outputs: Iterable[int]) -> list[str]:
    """Names of the original ops that still run outside every DELEGATE node.

    After delegation the interpreter lists its original nodes plus one DELEGATE node per
    partition.  An original node still runs on the reference kernels when its output is not
    produced by a partition but is read by a partition, by a graph output or by another such node.
    """
    dele = [o for o in ops if o["op_name"] == "DELEGATE"]
    orig = [o for o in ops if o["op_name"] != "DELEGATE"]
    d_out = {t for o in dele for t in _ints(o["outputs"])}
    need = {t for o in dele for t in _ints(o["inputs"])} | _ints(graph_outputs)
    left: set[int] = set()
    changed = True
    while changed:
        changed = False
        for o in orig:
            if o["index"] in left:
                continue
            outs = _ints(o["outputs"])
            if outs & d_out or not outs & need:
                continue
            left.add(o["index"])
            need |= _ints(o["inputs"]) - d_out
            changed = True
    return [o["op_name"] for o in orig if o["index"] in left]


def op_problems(
    ops: Sequence[Mapping[str, Any]], graph_inputs: Iterable[int], graph_outputs: Iterable[int]
) -> list[str]:
    """What keeps this op list (delegated interpreter) from running as one XNNPACK node."""
    ins, outs = _ints(graph_inputs), _ints(graph_outputs)
    problems = [f"op {name} is not an XNNPACK int8 op" for name in op_names(ops) if name not in XNNPACK_INT8_OPS]
    problems += [f"op {name} not delegated to XNNPACK" for name in undelegated(ops, outs)]
    dele = [o for o in ops if o["op_name"] == "DELEGATE"]
    if len(dele) != 1:
        problems.append(f"{len(dele)} DELEGATE nodes, want 1")
    else:
        d_in, d_out = _ints(dele[0]["inputs"]), _ints(dele[0]["outputs"])
        if not ins <= d_in:
            problems.append("the DELEGATE node does not read the graph input")
        if d_out != outs:
            problems.append(f"the DELEGATE node writes tensors {sorted(d_out)}, the graph outputs are {sorted(outs)}")
    return problems


def tensor_problems(
    tensors: Sequence[Mapping[str, Any]],
    ops: Sequence[Mapping[str, Any]],
    graph_inputs: Iterable[int],
    graph_outputs: Iterable[int],
) -> list[str]:
    """Tensors that are not int8 (int32 is allowed for constants: biases, shapes, paddings)."""
    produced = {t for o in ops if o["op_name"] != "DELEGATE" for t in _ints(o["outputs"])}
    io = _ints(graph_inputs) | _ints(graph_outputs)
    problems = []
    for t in tensors:
        name = _dtype_name(t["dtype"])
        idx = int(t["index"])
        if name == "int8":
            continue
        if name == "int32" and idx not in produced and idx not in io:
            continue
        where = "graph input/output" if idx in io else "computed" if idx in produced else "constant"
        problems.append(f"tensor {idx} {t.get('name', '')!r}: {name} ({where})")
    return problems


def op_names(ops: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({o["op_name"] for o in ops if o["op_name"] != "DELEGATE"})


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "__name__", dtype))


def interpreter(path: Path, threads: int = 2) -> Any:
    """A LiteRT interpreter with its default (XNNPACK) delegate, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def check_ops(path: Path) -> tuple[list[str], list[str]]:
    """(op names, op names XNNPACK did not take), as ``export.json`` records them."""
    it = interpreter(path)
    ops = it._get_ops_details()
    return op_names(ops), undelegated(ops, [d["index"] for d in it.get_output_details()])


def problems(path: Path) -> list[str]:
    """Everything that keeps ``path`` from being a full-int8 model run wholly by XNNPACK."""
    it = interpreter(path)
    ops = it._get_ops_details()
    ins = [d["index"] for d in it.get_input_details()]
    outs = [d["index"] for d in it.get_output_details()]
    return tensor_problems(it.get_tensor_details(), ops, ins, outs) + op_problems(ops, ins, outs)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("models", nargs="+", type=Path, metavar="MODEL")
    args = ap.parse_args()
    bad = 0
    for path in args.models:
        found = problems(path)
        print(f"{path}: {'ok' if not found else 'NOT full-int8 XNNPACK'}")
        for p in found:
            print(f"  {p}")
        bad += bool(found)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
