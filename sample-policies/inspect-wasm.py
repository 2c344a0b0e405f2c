#!/usr/bin/env python3
"""Print the custom sections, imports and exports of wasm modules and components.

Usage: inspect-wasm.py FILE.wasm...

No dependencies beyond the standard library. For a component it lists the
top-level imports and exports by name, and the custom sections of every nested
core module, such as `portcullis.metadata`. For a core module it lists the
custom sections, the imports as `module.name` and the exported functions.
"""

import json
import sys


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self):
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def name(self):
        n = self.u32()
        s = self.data[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s

    def done(self):
        return self.pos >= self.end


def custom(r, end, out, depth):
    name = r.name()
    payload = r.data[r.pos : end]
    if name in ("io.kubewarden.metadata", "portcullis.metadata"):
        try:
            json.loads(payload)
            verdict = "valid JSON"
        except ValueError as e:
            verdict = f"NOT JSON: {e}"
        out.append(f"{'  ' * depth}custom section {name!r}: {len(payload)} bytes, {verdict}")
    else:
        out.append(f"{'  ' * depth}custom section {name!r}: {len(payload)} bytes")


def core_module(data, start, end, out, depth):
    r = Reader(data, start + 8, end)
    imports, exports = [], []
    while not r.done():
        sid = r.byte()
        size = r.u32()
        sec_end = r.pos + size
        if sid == 0:
            custom(r, sec_end, out, depth)
        elif sid == 2:  # imports
            for _ in range(r.u32()):
                mod, name = r.name(), r.name()
                kind = r.byte()
                imports.append(f"{mod}.{name}" + ("" if kind == 0 else f" (kind {kind})"))
                # Skip the import's type: we only need the names.
                if kind == 0:
                    r.u32()
                elif kind == 1:  # table: reftype + limits
                    r.byte()
                    skip_limits(r)
                elif kind == 2:  # memory
                    skip_limits(r)
                elif kind == 3:  # global
                    r.byte()
                    r.byte()
                else:
                    break
        elif sid == 7:  # exports
            for _ in range(r.u32()):
                name = r.name()
                kind = r.byte()
                r.u32()
                exports.append(name + ("" if kind == 0 else f" (kind {kind})"))
        r.pos = sec_end
    pad = "  " * depth
    for i in imports:
        out.append(f"{pad}core import {i}")
    for e in exports:
        out.append(f"{pad}core export {e}")


def skip_limits(r):
    flags = r.byte()
    r.u32()
    if flags & 1:
        r.u32()


def component(data, start, end, out, depth):
    r = Reader(data, start + 8, end)
    pad = "  " * depth
    while not r.done():
        sid = r.byte()
        size = r.u32()
        sec_end = r.pos + size
        if sid == 0:
            custom(r, sec_end, out, depth)
        elif sid == 1:
            out.append(f"{pad}nested core module ({size} bytes):")
            core_module(data, r.pos, sec_end, out, depth + 1)
        elif sid == 4:
            out.append(f"{pad}nested component ({size} bytes):")
            component(data, r.pos, sec_end, out, depth + 1)
        elif sid in (10, 11):  # imports / exports: the first name of each entry
            count = r.u32()
            what = "import" if sid == 10 else "export"
            for _ in range(count):
                r.byte()  # 0x00 (plain name) or 0x01 (name + version suffix)
                name = r.name()
                out.append(f"{pad}component {what} {name}")
                if sid == 11:
                    r.byte()  # sort
                    if r.data[r.pos - 1] == 0x00:
                        r.byte()
                    r.u32()  # index
                    if r.byte() == 1:  # optional externdesc
                        skip_externdesc(r)
                else:
                    skip_externdesc(r)
        r.pos = sec_end


def skip_externdesc(r):
    kind = r.byte()
    if kind == 0x00:
        r.byte()  # 0x11
        r.u32()
    elif kind in (0x01, 0x04, 0x05):
        r.u32()
    elif kind in (0x02, 0x03):
        bound = r.byte()
        if kind == 0x03 and bound == 0x01:
            return
        r.u32()


def inspect(path):
    data = open(path, "rb").read()
    if data[:4] != b"\0asm":
        return [f"{path}: not wasm"]
    layer = data[6] | data[7] << 8
    out = []
    if layer == 1:
        out.append(f"{path}: component, {len(data)} bytes")
        component(data, 0, len(data), out, 1)
    else:
        out.append(f"{path}: core module, {len(data)} bytes")
        core_module(data, 0, len(data), out, 1)
    return out


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(inspect(p)))
