# Sourced by scripts/test and scripts/test-any-hour: Debian's faketime, which the wall-clock
# tests run the suite under. Installed when missing and this machine allows it (root with
# apt-get, as on CI); elsewhere those tests skip and say why.
_caiyun_ensure_faketime() {
    command -v faketime >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "未安装 faketime，相关测试将跳过 / faketime missing: the wall-clock tests will skip" >&2
        return 0
    fi
    echo "安装 faketime / installing Debian's faketime" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q faketime >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q faketime >/dev/null 2>&1; } \
        || echo "无法安装 faketime / could not install faketime: the wall-clock tests will skip" >&2
}

_caiyun_ensure_faketime
