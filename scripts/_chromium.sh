# Sourced by scripts/test: Debian's chromium (and a font with Chinese glyphs, for the
# screenshots) for the console's browser tests (tests/console), which Playwright drives; its own
# browser download cannot work on a machine that reaches only the package registries. Installed
# once when missing and this machine allows it (root with apt-get, as on CI); elsewhere those
# tests skip and say why.
_caiyun_ensure_chromium() {
    command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q . && return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "未安装 chromium，后台浏览器测试将跳过 / chromium missing: the console tests will skip" >&2
        return 0
    fi
    echo "安装 chromium / installing Debian's chromium and a CJK font" >&2
    export DEBIAN_FRONTEND=noninteractive
    local packages=(chromium fonts-wqy-zenhei)
    apt-get install -y -q "${packages[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${packages[@]}" >/dev/null 2>&1; } \
        || echo "无法安装 chromium / could not install chromium: the console tests will skip" >&2
}

_caiyun_ensure_chromium
