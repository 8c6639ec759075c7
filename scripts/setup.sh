#!/usr/bin/env bash
# Set up this checkout of napari-litenext; safe to rerun, finished steps are skipped.
#
#   scripts/setup.sh          .venv, torch, the package (editable, with the "testing" extra)
#   scripts/setup.sh --gui    the same, plus the system packages for the GUI tests (Xvfb, Qt's xcb libraries)
#
# Steps:
#   1. (--gui) apt-get install the missing system packages (through sudo when not root);
#   2. create .venv in the checkout if it is missing (installs python3-venv first if needed);
#   3. pip install torch (LITENEXT_TORCH_SPEC, default torch==2.13.0) BEFORE the package: the
#      package only asks for torch>=2.1, and left to itself pip would pull the multi-GB CUDA build;
#   4. pip install -e ".[testing]".
# Steps 3-4 are skipped while .venv/.napari-litenext-setup matches the hash of pyproject.toml, the
# torch requirement and the interpreter, and the package still imports from this checkout.
#
# Environment: PYTHON (interpreter for a new .venv; default python3.11, else python3, >= 3.10),
# LITENEXT_TORCH_SPEC, LITENEXT_NO_APT=1 (never call apt-get: list what is missing and stop).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
STAMP="$VENV/.napari-litenext-setup"
TORCH_SPEC="${LITENEXT_TORCH_SPEC:-torch==2.13.0}"

# Qt's xcb platform plugin in the PyQt6 wheels links these libraries (checked with ldd on
# libqxcb.so and libQt6XcbQpa.so); Mesa's software OpenGL lets vispy draw under Xvfb.
# "a|b" means either package will do: a is the current Debian/Ubuntu name, b the older one.
GUI_PACKAGES=(
  xvfb xauth
  libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-randr0 libxcb-render-util0
  libxcb-render0 libxcb-shape0 libxcb-shm0 libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xkb1
  libxcb1 libx11-xcb1 libxkbcommon-x11-0 libxkbcommon0
  libegl1 libgl1 libglx-mesa0 libgl1-mesa-dri
  libfontconfig1 libfreetype6 fonts-dejavu-core libdbus-1-3 "libglib2.0-0t64|libglib2.0-0"
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

GUI=0
for arg in "$@"; do
  case "$arg" in
    --gui) GUI=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$arg' (use --gui or --help)" ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run '$*': run as root or install sudo"
  fi
}

run_logged() {  # run_logged LOGFILE CMD...: output to LOGFILE, shown (its end) only on failure
  local logfile=$1
  shift
  if "$@" >>"$logfile" 2>&1; then
    case "$logfile" in /tmp/*) rm -f "$logfile" ;; esac
    return 0
  fi
  tail -n 40 "$logfile" >&2
  die "'$*' failed; full output in $logfile"
}

INSTALLED=" "
refresh_installed() {  # names of installed packages among the given specs, in one dpkg-query call
  local spec names=()
  for spec in "$@"; do names+=(${spec//|/ }); done
  INSTALLED=" $(dpkg-query -W -f='${Package} ${Status}\n' "${names[@]}" 2>/dev/null \
    | awk '$NF == "installed" && $(NF-1) == "ok" {printf "%s ", $1}' || true)"
}
is_installed() {  # any of the '|'-separated names is installed
  local name
  for name in ${1//|/ }; do
    case "$INSTALLED" in *" $name "*) return 0 ;; esac
  done
  return 1
}

APT_UPDATED=0
apt_install() {  # install the missing ones among the given package specs
  local spec name missing=() chosen=()
  refresh_installed "$@"
  for spec in "$@"; do is_installed "$spec" || missing+=("$spec"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${LITENEXT_NO_APT:-0}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages: ${missing[*]} (install them, then rerun)"
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    run_logged "$(mktemp -t napari-litenext-apt.XXXXXX)" as_root apt-get update -q
    APT_UPDATED=1
  fi
  for spec in "${missing[@]}"; do
    local pick=""
    for name in ${spec//|/ }; do
      if apt-cache show "$name" >/dev/null 2>&1; then pick=$name; break; fi
    done
    [ -n "$pick" ] || die "no package '${spec//|/' or '}' in the apt sources of this system"
    chosen+=("$pick")
  done
  log "installing system packages: ${chosen[*]}"
  run_logged "$(mktemp -t napari-litenext-apt.XXXXXX)" \
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${chosen[@]}"
}

# 1. System packages for the GUI tests.
if [ "$GUI" = 1 ]; then
  if command -v dpkg-query >/dev/null 2>&1; then
    apt_install "${GUI_PACKAGES[@]}"
  elif ! command -v xvfb-run >/dev/null 2>&1; then
    die "not a Debian-like system: install Xvfb (xvfb-run) and Qt's xcb libraries with your package manager"
  fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  PY="${PYTHON:-}"
  if [ -z "$PY" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
  fi
  command -v "$PY" >/dev/null 2>&1 || die "no '$PY' found: install Python 3.10 or newer (Debian: apt-get install python3)"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$("$PY" -V 2>&1) is too old: napari-litenext needs Python 3.10 or newer (set PYTHON=...)"
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of the interpreter package.
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    command -v dpkg-query >/dev/null 2>&1 || die "$PY cannot create virtual environments (no ensurepip)"
    apt_install "python${ver}-venv|python3-venv"
  fi
  if [ -e "$VENV" ]; then
    die "$VENV exists but has no working bin/python; remove it (rm -r .venv) and rerun"
  fi
  log "creating $VENV with $("$PY" -V 2>&1)"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'pass' 2>/dev/null \
  || die "$VENV/bin/python does not run (was the interpreter moved?); remove .venv and rerun"

# 3-4. torch first, then the package; skipped while nothing they depend on has changed.
key=$({ cat "$REPO/pyproject.toml"; echo "$TORCH_SPEC"; echo "$REPO"; "$VENV/bin/python" -VV; } \
      | sha256sum | cut -d' ' -f1)
imports_here() {
  "$VENV/bin/python" - "$REPO/src/" <<'EOF' >/dev/null 2>&1
import importlib.util, sys
spec = importlib.util.find_spec("napari_litenext")
sys.exit(not (spec and spec.origin.startswith(sys.argv[1]) and importlib.util.find_spec("torch")))
EOF
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] && imports_here; then
  log "up to date (.venv matches pyproject.toml; delete $STAMP to force a reinstall)"
  exit 0
fi
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PIPLOG="$VENV/setup.log"
: > "$PIPLOG"
log "installing $TORCH_SPEC first, so that pip keeps this build (log: $PIPLOG)"
run_logged "$PIPLOG" "${PIP[@]}" install --progress-bar off "$TORCH_SPEC"
log "installing napari-litenext (editable) with its test dependencies; a first run takes several minutes"
run_logged "$PIPLOG" "${PIP[@]}" install --progress-bar off -e "$REPO[testing]"
imports_here || die "napari_litenext does not import from $REPO/src after installing; see $PIPLOG"
echo "$key" > "$STAMP"
log "done: activate with '. .venv/bin/activate'"
