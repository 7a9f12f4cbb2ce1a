#!/usr/bin/env bash
# Builds the console's site into target/site, which the server embeds:
#   target/site/pkg/herald.js, herald_bg.wasm  the hydrate build of herald-app
#   target/site/pkg/herald.css                 style/main.css
#   target/site/*                              public/*
# Needs the tools `make tools` installs: the wasm32 target, wasm-bindgen 0.2.130
# (equal to the wasm-bindgen in Cargo.lock) and wasm-opt 132 from npm (Debian's
# wasm-opt 108 produces modules Chromium rejects). Set HERALD_WASM_PROFILE=dev
# for a quick unoptimised build (wasm-opt is then skipped).
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$0")/.."

profile=${HERALD_WASM_PROFILE:-wasm-release}
wasm_opt=${WASM_OPT:-$PWD/.tools/node_modules/.bin/wasm-opt}
front=target/front                  # own target dir: wasm flags never invalidate the server's
site=target/site
stage=target/site.new
[ "$profile" = dev ] && out_dir=debug || out_dir=$profile

cargo build -p herald-app --lib --target wasm32-unknown-unknown --profile "$profile" \
  --no-default-features --features hydrate --target-dir "$front"

# wasm-bindgen + wasm-opt take ~25 s: keep their output per input module (and
# version of this script) so that an unchanged app costs nothing.
input=$front/wasm32-unknown-unknown/$out_dir/herald_app.wasm
key=$(cat "$input" "$script" | sha256sum | cut -c1-16)
bindgen=$front/bindgen-$profile-$key
if [ ! -f "$bindgen/herald_bg.wasm" ]; then
  rm -rf "$front"/bindgen-"$profile"-* && mkdir -p "$bindgen.tmp"
  wasm-bindgen --target web --no-typescript --out-name herald --out-dir "$bindgen.tmp" "$input"
  if [ "$profile" != dev ]; then
    # Two -Oz rounds: the second finds another ~0.9 kB gzip (2026-11-30).
    "$wasm_opt" -Oz -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-reference-types --enable-multivalue --enable-sign-ext --enable-mutable-globals \
      "$bindgen.tmp/herald_bg.wasm" -o "$bindgen.tmp/herald_bg.opt.wasm"
    mv "$bindgen.tmp/herald_bg.opt.wasm" "$bindgen.tmp/herald_bg.wasm"
  fi
  mv "$bindgen.tmp" "$bindgen"
fi

rm -rf "$stage" && mkdir -p "$stage/pkg"
cp "$bindgen/herald.js" "$bindgen/herald_bg.wasm" "$stage/pkg/"
cp style/main.css "$stage/pkg/herald.css"
# Precompressed copies; the server sends them to browsers that accept gzip.
for f in herald_bg.wasm herald.js herald.css; do gzip -9 -n -c "$stage/pkg/$f" > "$stage/pkg/$f.gz"; done
cp -R public/. "$stage/"

# Copy only what changed, so unchanged files keep their mtime and cargo does
# not rebuild the server for nothing. rust-embed tracks only the files it
# embedded: when the set of files changes, touch the module that embeds them.
mkdir -p "$site"
old=$(cd "$site" && find . -type f | sort)
new=$(cd "$stage" && find . -type f | sort)
for f in $new; do
  cmp -s "$stage/$f" "$site/$f" || { mkdir -p "$(dirname "$site/$f")"; cp "$stage/$f" "$site/$f"; }
done
for f in $old; do [ -e "$stage/$f" ] || rm -f "$site/$f"; done
rm -rf "$stage"
[ "$old" = "$new" ] || touch server/src/http/site.rs
ls -l "$site" "$site/pkg"
