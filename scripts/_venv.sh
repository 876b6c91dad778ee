# Sourced by scripts/dev and scripts/test: make sure .venv exists and holds the project as
# pyproject.toml currently describes it. Runs from the repository root.

_caiyun_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python; do
        if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "需要 Python 3.10 或更高版本 / Python >= 3.10 is required (set PYTHON=...)" >&2
    return 1
}

_caiyun_ensure_venv() {
    local python stamp wanted
    if [[ ! -x .venv/bin/python ]]; then
        python="$(_caiyun_python)"
        echo "创建虚拟环境 / creating .venv with $python" >&2
        if ! "$python" -m venv .venv; then
            echo "无法创建 .venv（Debian/Ubuntu: apt install python3-venv）/ could not create .venv" >&2
            return 1
        fi
    fi
    stamp=.venv/.caiyun-installed
    wanted="$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
        echo "安装依赖 / installing the project into .venv" >&2
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e '.[dev]'
        # Written only after a successful install, so a failed one is retried next time.
        echo "$wanted" >"$stamp"
    fi
}

_caiyun_ensure_venv
