# Sourced by scripts/test: install the deploy tools that tests/contract/test_deploy_tools.py runs
# (deploy-check/package-lock.json, with `npm ci`), again only when the lock file changes. Without
# npm, or when the install fails, those tests skip and say why; nothing else depends on them.

_caiyun_ensure_deploy_check() {
    local stamp=deploy-check/node_modules/.caiyun-installed wanted
    if ! command -v npm >/dev/null 2>&1; then
        echo "npm 不可用，部署工具检查将跳过 / npm not found: the deploy tool checks will skip" >&2
        return 0
    fi
    wanted="$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("deploy-check/package-lock.json", "rb").read()).hexdigest())')"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        return 0
    fi
    echo "安装部署工具 / installing the deploy tools into deploy-check/node_modules" >&2
    if npm ci --prefix deploy-check --ignore-scripts --no-audit --no-fund --loglevel=error >&2; then
        # Written only after a successful install, so a failed one is retried next time.
        echo "$wanted" >"$stamp"
    else
        echo "部署工具安装失败，相关检查将跳过 / could not install the deploy tools: their checks will skip" >&2
    fi
}

_caiyun_ensure_deploy_check
