#!/usr/bin/env bash
# Create the peers' own virtual environments for the runtime benchmarks:
#   .venvs/autogen     autogen-core 0.7.5 and autogen-ext[grpc] (its gRPC worker runtime)
#   .venvs/agentscope  AgentScope 1.0.x (the latest 1.0 release)
# Idempotent: an environment whose peer already imports is left alone. Fails loudly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="$ROOT/.venvs"
PYTHON="${PYTHON:-python3}"

AUTOGEN_PINS=("autogen-core==0.7.5" "autogen-ext[grpc]==0.7.5")
# agentscope 1.0.21 imports only with mcp<2 (2.x moved modules), greenlet (sqlalchemy's
# asyncio extension) and tqdm beside it; none of these pull torch.
AGENTSCOPE_PINS=("agentscope==1.0.21" "mcp<2" "greenlet" "tqdm")

setup() {  # name, import check, pins...
    local name="$1" check="$2"
    shift 2
    local venv="$VENVS/$name"
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "setup_peers: $name ready ($venv)"
        return 0
    fi
    echo "setup_peers: creating $venv with $*"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    local log="$venv/install.log"
    if ! "$venv/bin/pip" install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
        grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
        echo "setup_peers: ERROR: installing $* into $venv failed (log: $log)" >&2
        exit 1
    fi
    if "$venv/bin/pip" list 2>/dev/null | grep -qiE '^(torch|nvidia-)'; then
        echo "setup_peers: ERROR: $name pulled torch/CUDA packages; fix the pins" >&2
        exit 1
    fi
    if ! "$venv/bin/python" -c "$check"; then
        echo "setup_peers: ERROR: $name does not import after install" >&2
        exit 1
    fi
    echo "setup_peers: $name ready ($venv)"
}

setup autogen "import autogen_core, autogen_ext.runtimes.grpc" "${AUTOGEN_PINS[@]}"
setup agentscope "import agentscope, agentscope.agent, agentscope.pipeline" "${AGENTSCOPE_PINS[@]}"
