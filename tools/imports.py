#!/usr/bin/env python3
"""The module import graph of src/, from every `crate::` and `super::` path in the code (test modules left out).

Prints each module's imports and exits 1 if the graph has a cycle, or if a module imports its own parent other than
for the folder's shared vocabulary (the names listed in ALLOWED_PARENT_USES). Usage: tools/imports.py [src]
"""
import collections
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
# Modules compiled for tests only.
TEST_ONLY = ("h1::differential", "config::tests")
# A folder's mod.rs may hold the words its children share; a child using those is not importing upward.
ALLOWED_PARENT_USES = {
    "h1": {"BodyLength", "Header", "MAX_HEADERS", "offset", "parse_content_length", "contains_token",
           "names_headers", "is_token_char"},
    "balance": {"Balance", "Candidates", "key_hash", "build"},
    "config": {"BackendConfig", "duration", "host_port", "parse_admin_addr", "HealthKind", "HealthConfig",
               "Resolve", "UNRESOLVED", "MAX_DEFAULT_HEALTH_TIMEOUT", "Algorithm", "BalanceConfig", "HashKey",
               "PassiveHealth", "Retries", "ClusterConfig", "HostMatch", "RouteConfig"},
    "h2": {"LocalExec"},
    "admin": {"Plane", "Command"},
    "backend": {"Backend"},
    "dns": {"Names"},
}


def modules(root):
    found = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]) or "::".join(parts).startswith(TEST_ONLY):
                continue
            found["::".join(parts)] = path
    return found


def resolve(names, current, path):
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] == "super":
        base = current.split("::")[:-1]
        parts = parts[1:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    else:
        return None, None
    full = base + parts
    for i in range(len(full), 0, -1):
        candidate = "::".join(full[:i])
        if candidate in names:
            rest = full[i:]
            return candidate, rest[0] if rest else None
    return None, None


def main():
    names = modules(ROOT)
    edges = collections.defaultdict(set)
    upward = []
    for module, path in sorted(names.items()):
        text = open(path).read()
        text = re.split(r"#\[cfg\(test\)\]\s*mod \w+", text)[0]
        text = re.sub(r"//.*", "", text)
        # `use super::{a, b::c}` is `super::a` and `super::b::c` (one level of braces).
        text = re.sub(
            r"\b((?:crate|super)(?:::\w+)*)::\{([^{}]*)\}",
            lambda m: " ".join(f"{m.group(1)}::{item.strip()}" for item in m.group(2).split(",") if item.strip()),
            text,
        )
        for match in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
            target, item = resolve(names, module, match.group(1))
            if not target or target == module:
                continue
            if module.startswith(target + "::"):
                if item not in ALLOWED_PARENT_USES.get(target, set()):
                    upward.append(f"{module} uses {target}::{item}")
                continue
            edges[module].add(target)
    for module in sorted(edges):
        print(f"{module} -> {', '.join(sorted(edges[module]))}")
    cycles = []
    state = {}
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in list(edges):
        if not state.get(node):
            visit(node)
    for cycle in cycles:
        print("cycle: " + " -> ".join(cycle))
    for use in upward:
        print("imports its parent: " + use)
    if cycles or upward:
        sys.exit(1)
    print("no cycle; no module imports its parent beyond the folder's shared words")


if __name__ == "__main__":
    main()
