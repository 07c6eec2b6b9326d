"""Rewrites a CUDA source file into C++ that the CPU simulation compiles.

Three constructs have no C++ spelling and are rewritten; everything else compiles as it is
against the headers under ``include/``:

- ``kernel<<<grid, block, shared, stream>>>(args)`` becomes
  ``::cuda_sim::launch(kernel, grid, block, shared, stream)(args)``;
- ``cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), ...)`` becomes
  ``::cuda_sim::launch_cooperative(kernel, ...)``, which takes the argument types from the kernel;
- ``__shared__`` declarations become references to storage the running block owns, and
  ``extern __shared__`` arrays a pointer to the block's dynamic shared memory.
"""

from __future__ import annotations

import re
import zlib

_ALIGN = r"(?:__align__\(\s*\d+\s*\)\s*)?"
_DYNAMIC = re.compile(r"extern\s+__shared__\s+" + _ALIGN + r"([\w:<>\s]+?)\s+(\w+)\s*\[\s*\]\s*;")
_AGGREGATE = re.compile(r"__shared__\s+" + _ALIGN + r"(union|struct)\s*\{")
_STATIC = re.compile(r"__shared__\s+" + _ALIGN + r"([\w:<>,\s]+?)\s+(\w+)\s*((?:\[[^\]]+\]\s*)*);")
_LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;{}()]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)
_COOPERATIVE = re.compile(r"cudaLaunchCooperativeKernel\(\s*reinterpret_cast<const void\s*\*>\(\s*([^()]+?)\s*\)\s*,")


def _matching_brace(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced braces after a __shared__ declaration")


def translate(source: str, name: str) -> str:
    """The C++ form of the CUDA source ``source`` (``name`` makes its declarations' keys unique)."""
    base = zlib.crc32(name.encode()) % 1_000_000 * 1000
    counter = iter(range(base, base + 1000))

    text = _DYNAMIC.sub(lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(::cuda_sim::dynamic_shared());", source)

    # Anonymous unions and structs get a name, so that the block's storage can be typed.
    while (m := _AGGREGATE.search(text)) is not None:
        close = _matching_brace(text, m.end() - 1)
        tail = re.match(r"\s*(\w+)\s*;", text[close + 1 :])
        if tail is None:
            raise ValueError("a __shared__ union or struct must declare one variable")
        key = next(counter)
        body = text[m.end() - 1 : close + 1]
        text = (
            text[: m.start()]
            + f"{m[1]} SharedAggregate{key} {body}; "
            + f"auto& {tail[1]} = ::cuda_sim::block_shared<SharedAggregate{key}, {key}LL>();"
            + text[close + 1 + tail.end() :]
        )

    def static(m: re.Match) -> str:
        dims = re.sub(r"\s+", "", m[3])
        return f"auto& {m[2]} = ::cuda_sim::block_shared<{m[1].strip()}{dims}, {next(counter)}LL>();"

    text = _STATIC.sub(static, text)
    text = _COOPERATIVE.sub(lambda m: f"::cuda_sim::launch_cooperative({m[1]},", text)
    text = _LAUNCH.sub(lambda m: f"::cuda_sim::launch({m[1]}, {m[2].strip()})(", text)
    if "__shared__" in text or "<<<" in text:
        raise ValueError(f"{name}: a __shared__ declaration or launch the translation does not know")
    return '#include "cuda_runtime_api.h"\n#line 1 "' + name + '"\n' + text
