#!/usr/bin/env python3
"""Checks ARCHITECTURE.md's layering rules against `cargo metadata`: which
workspace crates each crate may depend on directly (normal, build and dev
dependencies alike), and which outside crates a crate must not depend on
directly (the HTTP server, SQL, the TOML config), normal dependencies only.
Indirect dependencies follow from these: a crate can only reach what the
crates it may use expose. Exits 1 naming every broken rule. Run by
`make lint`."""

import json
import subprocess
import sys

# crate -> the workspace crates it may depend on.
ALLOWED = {
    "herald-shared": set(),
    "herald-keys": set(),
    "herald-federation": {"herald-keys", "herald-shared"},
    "herald-store": {"herald-shared", "herald-federation"},
    "herald-sender": {"herald-shared", "herald-keys", "herald-federation", "herald-store"},
    "herald-app": {"herald-shared"},
    "herald": {"herald-shared", "herald-keys", "herald-federation", "herald-store",
               "herald-sender", "herald-app"},
}

# crate -> outside crates it must not depend on (normal dependencies), and why.
FORBIDDEN = {
    "herald-shared": {"tokio": "no I/O", "sqlx": "no I/O", "axum": "no I/O"},
    "herald-keys": {"tokio": "no I/O", "axum": "no HTTP", "sqlx": "no SQL",
                    "hyper": "no HTTP", "hyper-util": "no HTTP", "reqwest": "no HTTP",
                    "tokio-rustls": "no I/O"},
    "herald-federation": {"sqlx": "federation does not know the store",
                          "axum": "no HTTP routes", "toml": "only the binary knows the TOML"},
    "herald-store": {"axum": "no HTTP routes", "hyper": "no HTTP",
                     "toml": "only the binary knows the TOML"},
    "herald-sender": {"axum": "no HTTP routes", "toml": "only the binary knows the TOML",
                      "sqlx": "SQL stays in herald-store"},
    "herald-app": {"sqlx": "the console talks HTTP only", "tokio": "the console talks HTTP only"},
    "herald": {"sqlx": "all SQL stays in herald-store (tests may look at rows)"},
}


def main() -> int:
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"]
        if "--offline" in sys.argv else
        ["cargo", "metadata", "--format-version", "1", "--no-deps"]))
    ours = {p["name"] for p in meta["packages"]}
    broken = []
    for package in meta["packages"]:
        name = package["name"]
        if name not in ALLOWED:
            broken.append(f"{name}: not in the layering table (add it to "
                          "scripts/check-layers.py and ARCHITECTURE.md)")
            continue
        for dep in package["dependencies"]:
            dep_name, kind = dep["name"], dep["kind"] or "normal"
            if dep_name in ours and dep_name not in ALLOWED[name]:
                broken.append(f"{name} depends on {dep_name} ({kind}): not allowed")
            why = FORBIDDEN.get(name, {}).get(dep_name)
            if why and kind == "normal":
                broken.append(f"{name} depends on {dep_name}: {why}")
    missing = set(ALLOWED) - ours
    for name in sorted(missing):
        broken.append(f"{name}: in the layering table but not in the workspace")
    for line in broken:
        print(f"layering: {line}", file=sys.stderr)
    if broken:
        return 1
    print(f"layering: {len(ours)} crates, every dependency allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
