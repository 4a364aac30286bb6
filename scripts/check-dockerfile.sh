#!/usr/bin/env bash
# Checks deploy/Dockerfile without a container engine (CI has none):
#
#  1. the build context: .dockerignore keeps target/, .cache/ and .git out;
#  2. the build stage (the one the final stage copies from) is replayed on
#     the host: each COPY copies from the repository into a scratch directory
#     standing in for the image's file system (.cache/dockerfile-check/root),
#     each RUN runs there with bash, each ENV is exported. So a dependency
#     stub that drifts from Cargo.toml (a [[bench]] without its stub file), a
#     source folder the build needs but no COPY brings, or a stale Cargo.lock
#     (--locked) fails here as it would in `docker build`;
#  3. the runtime stage: no REWARDHOOKS__ ENV (it would silently beat the
#     mounted config file); its apt-get install names ca-certificates, and
#     every shared library the built binary links (ldd) comes from a package
#     it installs or from the base image; the binary runs (--version).
#
# Speed: CARGO_TARGET_DIR is the repository's target/ (override with
# DOCKERFILE_CHECK_TARGET), so dependencies compile once and later runs only
# rebuild the rewardhooks crate itself, as the image's cached layers would.
# The replay runs the real `cargo build --release` by default. Set
# DOCKERFILE_CHECK_CARGO=check to run `cargo check` instead (no binary, so
# step 3's library and --version checks are skipped): only for a machine where
# a release build is too slow; CI keeps the default.
#
# CHECKS_REQUIRED=1 (CI) makes missing ldd/dpkg an error instead of a skip.
# Build-stage RUN lines that start with apt-get are not run: their packages
# must already be installed on the host (checked with dpkg -s).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DOCKERFILE="${DOCKERFILE:-$ROOT/deploy/Dockerfile}"
WORK="${DOCKERFILE_CHECK_WORK:-$ROOT/.cache/dockerfile-check}"
TARGET="${DOCKERFILE_CHECK_TARGET:-$ROOT/target}"
CARGO_MODE="${DOCKERFILE_CHECK_CARGO:-build}"
# Packages of debian:bookworm-slim itself (required priority and apt's
# dependencies) that a runtime stage need not install.
BASE_PACKAGES="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libbz2-1.0 libselinux1 libpcre2-8-0"
# Packages the runtime stage must name whatever ldd says.
REQUIRED_RUNTIME_PACKAGES="ca-certificates"

fail() { echo "check-dockerfile: FAIL: $*" >&2; exit 1; }
say() { echo "check-dockerfile: $*"; }

[ -f "$DOCKERFILE" ] || fail "no $DOCKERFILE"
case "$CARGO_MODE" in build|check) ;; *) fail "DOCKERFILE_CHECK_CARGO must be build or check";; esac

# --- 1. build context ------------------------------------------------------
ignore="$ROOT/.dockerignore"
[ -f "$ignore" ] || fail ".dockerignore is missing: the whole target/ would go into the build context"
for must in target .cache .git; do
  grep -Eq "^/?${must//./\\.}/?(\*\*)?$" "$ignore" || fail ".dockerignore does not exclude $must"
done

# --- parse the Dockerfile --------------------------------------------------
# One instruction per line: comments dropped, continuations joined.
instructions="$(awk '
  /^[[:space:]]*#/ { next }
  {
    line = $0
    if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", line); buf = buf line; next }
    buf = buf line
    if (buf ~ /[^[:space:]]/) print buf
    buf = ""
  }
  END { if (buf ~ /[^[:space:]]/) print buf }
' "$DOCKERFILE")"

# Stage of each instruction: stage_of[i], stage names, final stage index.
mapfile -t lines <<<"$instructions"
declare -a stage_of stage_name stage_image
stage=-1
for i in "${!lines[@]}"; do
  read -r kw rest <<<"${lines[$i]}"
  if [ "${kw^^}" = FROM ]; then
    stage=$((stage + 1))
    image="$(awk '{for (i=1;i<=NF;i++) if ($i !~ /^--/) {print $i; exit}}' <<<"$rest")"
    name="$(awk '{for (i=1;i<NF;i++) if (toupper($i)=="AS") print $(i+1)}' <<<"$rest")"
    stage_image[$stage]="$image"
    stage_name[$stage]="${name:-$stage}"
  fi
  stage_of[$i]=$stage
done
final=$stage
[ "$final" -ge 1 ] || fail "expected a multi-stage Dockerfile (build stage, runtime stage)"

# The build stage: the one the final stage copies the binary from.
build_ref=""
for i in "${!lines[@]}"; do
  [ "${stage_of[$i]}" = "$final" ] || continue
  if [[ "${lines[$i]}" =~ ^[Cc][Oo][Pp][Yy][[:space:]].*--from=([^[:space:]]+) ]]; then
    build_ref="${BASH_REMATCH[1]}"
  fi
done
[ -n "$build_ref" ] || fail "the final stage copies nothing from a build stage"
build=""
for s in "${!stage_name[@]}"; do
  [ "${stage_name[$s]}" = "$build_ref" ] && build=$s
done
[ -n "$build" ] || fail "COPY --from=$build_ref names no stage"

# The build image's Rust must satisfy Cargo.toml's rust-version.
rust_version="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
if [[ "${stage_image[$build]}" =~ ^(docker\.io/(library/)?)?rust:([0-9]+\.[0-9]+(\.[0-9]+)?) ]]; then
  image_rust="${BASH_REMATCH[3]}"
  if [ -n "$rust_version" ] && [ "$(printf '%s\n%s\n' "$rust_version" "$image_rust" | sort -V | head -1)" != "$rust_version" ]; then
    fail "build image ${stage_image[$build]} is older than Cargo.toml's rust-version $rust_version"
  fi
fi

# --- 2. replay the build stage ----------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK/root" "$TARGET"
export CARGO_TARGET_DIR="$TARGET"
cwd="$WORK/root"
workdir="/"

# Copies one COPY source (relative to the build context) to dest, honouring
# the simple patterns of .dockerignore (the ones this repository uses).
excludes=()
while IFS= read -r pat; do
  pat="${pat%%#*}"; pat="${pat%/}"; pat="${pat#/}"; pat="$(echo "$pat" | xargs)"
  [ -n "$pat" ] && excludes+=("--exclude=./$pat")
done <"$ignore"
copy_in() {
  local src="$1" dest="$2" many="$3"
  [ -e "$ROOT/$src" ] || fail "COPY $src: not in the build context"
  if [ -d "$ROOT/$src" ]; then
    mkdir -p "$dest"
    tar -C "$ROOT/$src" "${excludes[@]}" -cf - . | tar -C "$dest" -xf -
  elif [ "$many" = 1 ] || [[ "$dest" == */ ]]; then
    mkdir -p "$dest"; cp -p "$ROOT/$src" "$dest/"
  else
    mkdir -p "$(dirname "$dest")"; cp -p "$ROOT/$src" "$dest"
  fi
}

say "replaying stage '${stage_name[$build]}' (${stage_image[$build]}) with cargo $CARGO_MODE, CARGO_TARGET_DIR=$TARGET"
for i in "${!lines[@]}"; do
  [ "${stage_of[$i]}" = "$build" ] || continue
  read -r kw rest <<<"${lines[$i]}"
  case "${kw^^}" in
    FROM|LABEL|USER|EXPOSE|CMD|ENTRYPOINT|SHELL|STOPSIGNAL|HEALTHCHECK|VOLUME) ;;
    ARG)
      [[ "$rest" == *=* ]] && export "${rest%%=*}=${rest#*=}" ;;
    ENV)
      # ENV KEY=VALUE ... (the legacy "ENV KEY VALUE" form is not used here).
      for kv in $rest; do
        [[ "$kv" == *=* ]] || fail "ENV $rest: use the KEY=VALUE form"
        [ "${kv%%=*}" = CARGO_TARGET_DIR ] || export "${kv%%=*}=${kv#*=}"
      done ;;
    WORKDIR)
      case "$rest" in /*) workdir="$rest" ;; *) workdir="$workdir/$rest" ;; esac
      cwd="$WORK/root$workdir"; mkdir -p "$cwd" ;;
    COPY)
      read -r -a args <<<"$rest"
      flags=(); paths=()
      for a in "${args[@]}"; do
        case "$a" in --from=*) fail "build-stage COPY $a is not replayed";; --*) flags+=("$a");; *) paths+=("$a");; esac
      done
      [ "${#paths[@]}" -ge 2 ] || fail "COPY $rest: needs a source and a destination"
      dest="${paths[-1]}"; unset 'paths[-1]'
      case "$dest" in /*) dest="$WORK/root$dest" ;; *) dest="$cwd/$dest" ;; esac
      many=0; [ "${#paths[@]}" -gt 1 ] && many=1
      for src in "${paths[@]}"; do copy_in "$src" "$dest" "$many"; done
      say "  COPY ${paths[*]}" ;;
    RUN)
      [[ "$rest" == \[* ]] && fail "RUN in exec form is not replayed: use the shell form"
      if [[ "$rest" =~ ^apt-get ]]; then
        for pkg in $(sed -n 's/.*apt-get install\(.*\)/\1/p' <<<"$rest" | sed 's/&&.*//'); do
          [[ "$pkg" == -* ]] && continue
          dpkg -s "$pkg" >/dev/null 2>&1 || fail "build stage installs $pkg, which this host lacks (apt-get install $pkg)"
        done
        say "  RUN apt-get ... (packages present on the host)"
        continue
      fi
      cmd="$rest"
      if [ "$CARGO_MODE" = check ]; then cmd="${cmd//cargo build/cargo check}"; fi
      say "  RUN $cmd"
      (cd "$cwd" && bash -c "$cmd") || fail "build-stage RUN failed: $cmd"
      ;;
    ADD) fail "ADD is not replayed: use COPY" ;;
    *) fail "unknown instruction $kw" ;;
  esac
done

# --- 3. runtime stage ---------------------------------------------------------
runtime_packages=""
binary=""
for i in "${!lines[@]}"; do
  [ "${stage_of[$i]}" = "$final" ] || continue
  line="${lines[$i]}"
  read -r kw rest <<<"$line"
  case "${kw^^}" in
    ENV)
      [[ "$rest" =~ REWARDHOOKS__ ]] && fail "runtime ENV $rest would silently override the mounted config file; set it in the config (ConfigMap) instead" ;;
    RUN)
      while read -r pkgs; do
        for pkg in $pkgs; do
          [[ "$pkg" == -* ]] || runtime_packages="$runtime_packages $pkg"
        done
      done < <(grep -o 'apt-get install[^&;|]*' <<<"$rest" | sed 's/^apt-get install//') ;;
    COPY)
      if [[ "$rest" =~ --from=$build_ref[[:space:]]+([^[:space:]]+) ]]; then
        src="${BASH_REMATCH[1]}"
        # The image's <workdir>/target is CARGO_TARGET_DIR here.
        case "$src" in
          "${workdir%/}/target/"*) binary="$TARGET/${src#"${workdir%/}/target/"}" ;;
          /*) binary="$WORK/root$src" ;;
          *) binary="$WORK/root${workdir%/}/$src" ;;
        esac
      fi ;;
  esac
done
for pkg in $REQUIRED_RUNTIME_PACKAGES; do
  [[ " $runtime_packages " == *" $pkg "* ]] || fail "the runtime stage does not install $pkg"
done
say "runtime stage installs:$runtime_packages"

if [ "$CARGO_MODE" = check ]; then
  say "cargo check mode: runtime library and --version checks skipped"
  say "OK"
  exit 0
fi
[ -x "$binary" ] || fail "the runtime stage copies $binary, which the build stage did not produce"
"$binary" --version >/dev/null || fail "$binary --version failed"
if command -v ldd >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  for lib in $(ldd "$binary" | awk '/=>/ && $3 ~ /^\// {print $3}'); do
    real="$(readlink -f "$lib")"
    pkg="$(dpkg -S "$real" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true)"
    pkg="${pkg%%:*}"
    [ -n "$pkg" ] || fail "no Debian package owns $lib (linked by the binary)"
    if [[ " $BASE_PACKAGES $runtime_packages " != *" $pkg "* ]]; then
      fail "the binary links $lib from package $pkg, which the runtime stage does not install"
    fi
  done
  say "shared libraries all come from the runtime stage's packages or the base image"
else
  [ "${CHECKS_REQUIRED:-0}" = 1 ] && fail "ldd or dpkg missing: cannot check the runtime stage's libraries"
  say "ldd or dpkg missing: linked libraries not checked"
fi
say "OK ($(du -h "$binary" | cut -f1) binary)"
