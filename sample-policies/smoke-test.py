#!/usr/bin/env python3
"""End-to-end smoke test of the built policies, run in wasmtime from Python.

Independent of the Portcullis host: it loads target/policies/*.wasm (build them
first with scripts/build-policies.sh), speaks waPC to the core modules and calls
the components' exports, and checks verdicts, messages, mutations and the
adversarial behaviours (epoch interruption, a memory limit, traps).

Needs the `wasmtime` package from PyPI (pip install wasmtime; tested with 50.0.1):
    python3 sample-policies/smoke-test.py [POLICY_DIR] [FIXTURE_DIR]
Prints one line per check and closes with 'N passed, N failed'.
"""

import json
import os
import sys
import threading
import time

from wasmtime import Config, Engine, FuncType, Linker, Module, Store, ValType, WasiConfig
from wasmtime.component import Component, Linker as ComponentLinker, Record

HERE = os.path.dirname(os.path.abspath(__file__))
POLICIES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "policies")
FIXTURES = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "..", "..", "shared", "fixtures")

cfg = Config()
cfg.epoch_interruption = True
engine = Engine(cfg)


def ticker():
    while True:
        time.sleep(0.1)
        engine.increment_epoch()


threading.Thread(target=ticker, daemon=True).start()
cache = {}
DEADLINE_TICKS = 20  # 2 s
MEMORY_LIMIT = 64 << 20


def new_store():
    store = Store(engine)
    store.set_wasi(WasiConfig())
    store.set_epoch_deadline(DEADLINE_TICKS)
    store.set_limits(memory_size=MEMORY_LIMIT)
    return store


def trap_text(e):
    return " | ".join(l.strip() for l in str(e).splitlines() if "trap" in l)


def wapc(name, op, payload):
    """Fresh instance, waPC call. Returns ("ok", bytes) | ("error", str) | ("trap", str)."""
    path = os.path.join(POLICIES, name + ".wasm")
    if path not in cache:
        cache[path] = Module.from_file(engine, path)
    store = new_store()
    linker = Linker(engine)
    linker.define_wasi()
    op_b = op.encode()
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    st = {}
    i32 = ValType.i32()

    def guest_request(c, op_ptr, ptr):
        c["memory"].write(c, op_b, op_ptr)
        c["memory"].write(c, body, ptr)

    def guest_response(c, ptr, n):
        st["resp"] = bytes(c["memory"].read(c, ptr, ptr + n))

    def guest_error(c, ptr, n):
        st["err"] = bytes(c["memory"].read(c, ptr, ptr + n)).decode(errors="replace")

    for fname, f in [("__guest_request", guest_request), ("__guest_response", guest_response),
                     ("__guest_error", guest_error), ("__console_log", lambda c, p, n: None)]:
        linker.define_func("wapc", fname, FuncType([i32, i32], []), f, access_caller=True)
    linker.define_func("wapc", "__host_call", FuncType([i32] * 8, [i32]), lambda *a: 0)
    linker.define_func("wapc", "__host_response", FuncType([i32], []), lambda *a: None)
    linker.define_func("wapc", "__host_response_len", FuncType([], [i32]), lambda: 0)
    linker.define_func("wapc", "__host_error", FuncType([i32], []), lambda *a: None)
    linker.define_func("wapc", "__host_error_len", FuncType([], [i32]), lambda: 0)
    exports = linker.instantiate(store, cache[path]).exports(store)
    for init in ("_start", "_initialize", "wapc_init"):
        if init in exports:
            exports[init](store)
    try:
        rc = exports["__guest_call"](store, len(op_b), len(body))
    except Exception as e:  # a trap
        return ("trap", trap_text(e))
    return ("ok", st.get("resp")) if rc == 1 else ("error", st.get("err"))


def rec(**kw):
    r = Record()
    for k, v in kw.items():
        setattr(r, k.replace("_", "-"), v)
    return r


def admission_request(d):
    def gvk(g):
        return rec(group=g.get("group", ""), version=g.get("version", ""), kind=g.get("kind", ""))

    def gvr(g):
        return rec(group=g.get("group", ""), version=g.get("version", ""), resource=g.get("resource", ""))

    def text(x):
        return None if x is None else json.dumps(x)

    ui = d.get("userInfo", {})
    return rec(uid=d.get("uid", ""), kind=gvk(d.get("kind", {})), resource=gvr(d.get("resource", {})),
               sub_resource=d.get("subResource"), request_kind=None, request_resource=None,
               request_sub_resource=None, name=d.get("name", ""), namespace=d.get("namespace"),
               operation=d.get("operation", "CREATE").lower(),
               user_info=rec(username=ui.get("username", ""), uid=ui.get("uid", ""),
                             groups=ui.get("groups", []), extra=[]),
               object=text(d.get("object")), old_object=text(d.get("oldObject")),
               options=text(d.get("options")), dry_run=bool(d.get("dryRun", False)))


def component(name, fn, arg):
    """Fresh instance, component call. Returns ("ok", dict) | ("err", str) | ("trap", str)."""
    path = os.path.join(POLICIES, name + ".wasm")
    if path not in cache:
        cache[path] = Component.from_file(engine, path)
    store = new_store()
    linker = ComponentLinker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        with root.add_instance("portcullis:policy/types@0.1.0"):
            pass
    func = linker.instantiate(store, cache[path]).get_func(store, fn)
    if fn == "validate":
        request, settings = arg
        arg = rec(request=admission_request(request), settings=json.dumps(settings))
    else:
        arg = json.dumps(arg)
    try:
        r = func(store, arg)
    except Exception as e:
        return ("trap", trap_text(e))
    if isinstance(r, Record):
        return ("ok", dict(r.__dict__))
    return ("err", r)


# ---- a uniform view of both ABIs -------------------------------------------------

def validate(policy, settings, request):
    """Returns (kind, response dict with accepted/message/code/mutated)."""
    if policy.endswith("-wapc"):
        kind, body = wapc(policy, "validate", {"request": request, "settings": settings})
        if kind != "ok":
            return kind, body
        try:
            r = json.loads(body)
        except ValueError:
            return "garbage", body
        return "ok", {"accepted": r["accepted"], "message": r.get("message"), "code": r.get("code"),
                      "mutated": r.get("mutated_object")}
    kind, r = component(policy, "validate", (request, settings))
    if kind != "ok":
        return kind, r
    mutated = r["mutated-object"]
    if mutated is not None:
        try:
            mutated = json.loads(mutated)
        except ValueError:
            return "garbage", mutated
    return "ok", {"accepted": r["accepted"], "message": r["message"], "code": r["code"], "mutated": mutated}


def settings_valid(policy, settings):
    """Returns (valid, message); a waPC error or component err counts as invalid."""
    if policy.endswith("-wapc"):
        kind, body = wapc(policy, "validate_settings", settings)
        if kind != "ok":
            return False, body
        r = json.loads(body)
        return r["valid"], r.get("message")
    kind, r = component(policy, "validate-settings", settings)
    if kind != "ok":
        return False, r
    return r["valid"], r["message"]


passed = failed = 0


def check(label, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {label}")
    else:
        failed += 1
        print(f"FAIL {label}: {detail}")


def fixture(name):
    return json.load(open(os.path.join(FIXTURES, name)))["request"]


def main():
    for abi in ("wapc", "component"):
        p = f"pod-privileged-{abi}"
        for f, want in [("pod-privileged.json", "Privileged container is not allowed: sidecar"),
                        ("pod-init-privileged.json", "Privileged init container is not allowed: setup"),
                        ("pod-unprivileged.json", None)]:
            kind, r = validate(p, {}, fixture(f))
            check(f"{p} {f}", kind == "ok" and r["accepted"] == (want is None)
                  and r["message"] == want and r["code"] is None, (kind, r))
        kind, r = validate(p, {"skip_init_containers": True}, fixture("pod-init-privileged.json"))
        check(f"{p} skip_init_containers", kind == "ok" and r["accepted"], (kind, r))
        req = fixture("pod-privileged.json")
        req["object"]["spec"]["ephemeralContainers"] = [
            {"name": "dbg", "image": "x", "securityContext": {"privileged": True}}]
        kind, r = validate(p, {}, req)
        check(f"{p} ephemeral", kind == "ok" and r["message"] ==
              "Privileged container is not allowed: sidecar; Privileged ephemeral container is not allowed: dbg",
              (kind, r))
        kind, r = validate(p, {"skip_ephemeral_containers": True}, req)
        check(f"{p} skip_ephemeral_containers", kind == "ok"
              and r["message"] == "Privileged container is not allowed: sidecar", (kind, r))
        req = fixture("pod-privileged.json")
        req["kind"]["kind"] = "Deployment"
        kind, r = validate(p, {}, req)
        check(f"{p} non-Pod accepted", kind == "ok" and r["accepted"], (kind, r))
        check(f"{p} settings ok", settings_valid(p, {"skip_init_containers": True})[0])
        check(f"{p} settings unknown key", not settings_valid(p, {"nope": True})[0])

        p = f"default-labels-{abi}"
        s = {"labels": {"team": "platform", "env": "prod"}}
        kind, r = validate(p, s, fixture("pod-no-labels.json"))
        check(f"{p} no labels", kind == "ok" and r["accepted"] and r["mutated"]["metadata"]["labels"]
              == {"team": "platform", "env": "prod"}, (kind, r))
        kind, r = validate(p, s, fixture("pod-partial-labels.json"))
        check(f"{p} partial labels", kind == "ok" and r["accepted"] and r["mutated"]["metadata"]["labels"]
              == {"app": "web", "team": "payments", "env": "prod"}, (kind, r))
        kind, r = validate(p, {"labels": {"app": "other"}}, fixture("pod-partial-labels.json"))
        check(f"{p} nothing missing", kind == "ok" and r["accepted"] and r["mutated"] is None, (kind, r))
        cm = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
              "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}}
        kind, r = validate(p, s, cm)
        check(f"{p} ConfigMap", kind == "ok" and r["mutated"]["metadata"]["labels"]["env"] == "prod", (kind, r))
        valid, msg = settings_valid(p, {"labels": {"Bad/x": "y"}})
        check(f"{p} bad key", not valid and '"Bad/x"' in (msg or ""), msg)
        valid, msg = settings_valid(p, {"labels": {"k": "-v"}})
        check(f"{p} bad value", not valid and '"-v"' in (msg or ""), msg)
        check(f"{p} unknown settings key", not settings_valid(p, {"label": {}})[0])
        check(f"{p} settings ok", settings_valid(p, s)[0])

        p = f"adversarial-{abi}"
        req = fixture("pod-privileged.json")
        for behaviour, want in [("accept", "ok"), ("trap", "unreachable"), ("loop", "interrupt"),
                                ("memory-bomb", "trap"), ("garbage", "garbage")]:
            kind, r = validate(p, {"behaviour": behaviour}, req)
            got = kind if kind != "trap" else r
            check(f"{p} {behaviour}", want in got and (behaviour != "accept" or r["accepted"]), (kind, r))
        for _ in range(2):
            kind, r = validate(p, {"behaviour": "counter"}, req)
            check(f"{p} counter fresh instance", kind == "ok" and r["message"] == "1", (kind, r))
        check(f"{p} settings ok", settings_valid(p, {"behaviour": "memory-bomb"})[0])
        check(f"{p} settings unknown behaviour", not settings_valid(p, {"behaviour": "nope"})[0])

    for p in ("pod-privileged-wapc", "default-labels-wapc", "adversarial-wapc"):
        kind, body = wapc(p, "protocol_version", b"")
        check(f"{p} protocol_version", (kind, body) == ("ok", b'"v1"'), (kind, body))

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
