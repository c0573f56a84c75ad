"""The torch layer calls the compiled module's functions with their arguments by position (nanobind
matches positions faster than keywords), so an argument that lands in another parameter's place
would pass silently. This test reads those calls in the package's source and checks each position
against the parameter the binding declares there: a variable named like one of the function's
parameters must sit in that parameter's place, a constant must equal the default of its place,
and `_stream(...)` goes to `stream`."""
import ast
import os
import re

import flashattn
from flashattn import _ext

PACKAGE = os.path.dirname(os.path.abspath(flashattn.__file__))
WRAPPERS = {"_dl", "_to_dlpack"}  # tensor → DLPack: the variable inside is the argument


def _parameters(fn):
    """[(name, default source or None)] from the binding's signature line."""
    line = fn.__doc__.split("\n")[0]
    inner = line[line.index("(") + 1:line.rindex(")")]
    params = []
    for part in re.split(r", (?=\w+: )", inner):
        name, _, rest = part.partition(": ")
        params.append((name, rest.split(" = ", 1)[1] if " = " in rest else None))
    return params


def _callee(node):
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _binding_calls():
    for name in os.listdir(PACKAGE):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(PACKAGE, name)).read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and ast.unparse(node.func.value) in ("_ext", "ops._ext")):
                yield name, node


def _mismatches(call, params):
    """What is wrong with the positions of one `_ext.<fn>(...)` call, as strings."""
    names = [p for p, _ in params]
    if len(call.args) > len(params):
        return [f"{len(call.args)} arguments for {len(params)} parameters"]
    out = []
    for i, arg in enumerate(call.args):
        where = f"argument {i + 1} ({names[i]})"
        try:
            value = ast.literal_eval(arg)  # a constant, -1 included
        except ValueError:
            pass
        else:
            if params[i][1] != repr(value):
                out.append(f"{where}: {value!r} where the default is {params[i][1]}")
            continue
        if isinstance(arg, ast.Call) and _callee(arg) == "_stream":
            if names[i] != "stream":
                out.append(f"{where}: gets the stream")
            continue
        if isinstance(arg, ast.Call) and _callee(arg) in WRAPPERS:
            arg = arg.args[0]
        if isinstance(arg, ast.Name) and arg.id in names and arg.id != names[i]:
            out.append(f"{where}: gets {arg.id}")
    out += [f"unknown keyword {k.arg}" for k in call.keywords if k.arg not in names]
    return out


def test_positional_calls_match_the_bindings():
    calls = list(_binding_calls())
    assert {c.func.attr for _, c in calls} >= {"forward", "backward", "combine"}
    for file, call in calls:
        problems = _mismatches(call, _parameters(getattr(_ext, call.func.attr)))
        assert not problems, f"{file}:{call.lineno} _ext.{call.func.attr}: {problems}"


def test_the_check_sees_a_swap_and_a_misplaced_constant():
    call = ast.parse("_ext.forward(_to_dlpack(q), k, v, out, _dl(lse), softmax_scale, causal, "
                     "window_right, window_left, 1.0, _dl(alibi_slopes), dropout_p, -1)").body[0].value
    assert _mismatches(call, _parameters(_ext.forward)) == [
        "argument 8 (window_left): gets window_right",
        "argument 9 (window_right): gets window_left",
        "argument 10 (softcap): 1.0 where the default is 0.0",
        "argument 13 (dropout_seed): -1 where the default is 0",
    ]
