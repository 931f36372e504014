#!/usr/bin/env bash
# CardTwin's system packages (Debian 12): what the Python venv cannot bring.
#   chromium            headless browser that prints the HTML reports to PDF (sim/pdf.py)
#   fonts-wqy-microhei  a CJK font, so Chinese text in the PDFs is not drawn as boxes
#   python3-venv        only if this Python cannot make a venv (Debian's python3 lacks ensurepip)
#   redis-server, postgresql, mosquitto
#                       the servers the stream sinks are tested against (traffic/sinks/): the
#                       tests start their own on loopback in a temporary folder and stop them;
#                       the packages' own system services are not used
# Installs only what is missing; silent and exit 0 when everything is there (`make install`
# runs it). Exits non-zero with a message when something is missing and cannot be installed.
set -euo pipefail

CHROMIUM_PACKAGE=chromium
CJK_FONT_PACKAGE=fonts-wqy-microhei

missing=()

# The venv the Makefile makes next needs ensurepip, which Debian ships apart from python3.
if ! "${PYTHON:-python3}" -c "import ensurepip, venv" >/dev/null 2>&1; then
    missing+=("python3-venv")
fi

# Chromium: the binary on PATH is what counts (sim/pdf.py uses /usr/bin/chromium).
if ! command -v chromium >/dev/null 2>&1; then
    missing+=("$CHROMIUM_PACKAGE")
fi

# A CJK font: any font fontconfig knows for Chinese will do, not only this package's.
has_cjk_font() {
    if command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; then
        return 0
    fi
    # Status, not just `dpkg -s`: a removed package whose config files remain is known to dpkg.
    [ "$(dpkg-query -W -f='${Status}' "$CJK_FONT_PACKAGE" 2>/dev/null)" = "install ok installed" ]
}
if ! has_cjk_font; then
    missing+=("$CJK_FONT_PACKAGE")
fi

# The stream sinks' servers (tests/services.py finds them where these packages put them).
if ! command -v redis-server >/dev/null 2>&1; then
    missing+=("redis-server")
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=("postgresql")
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing+=("mosquitto")
fi

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

echo "setup_system: installing missing Debian packages: ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_system: apt-get not found (this script expects Debian 12); install by hand:" \
        "${missing[*]}" >&2
    exit 1
fi

# Root installs directly; anyone else needs sudo (which may ask for a password).
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "setup_system: not root and sudo not found; as root run:" \
        "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

# noninteractive: no package may stop `make` with a configuration question. Passed through
# env because sudo drops the caller's environment.
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
if ! "${apt[@]}" update || ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
    echo "setup_system: could not install ${missing[*]} (see apt-get's messages above);" \
        "install them by hand, then run make again" >&2
    exit 1
fi

# Fonts installed from a package are registered by its trigger; refresh anyway so a font just
# installed is seen by the next command (fc-cache is quick when nothing changed).
if command -v fc-cache >/dev/null 2>&1; then
    fc-cache -f >/dev/null 2>&1 || true
fi

if ! command -v chromium >/dev/null 2>&1 || ! has_cjk_font; then
    echo "setup_system: ${missing[*]} installed, but chromium or a CJK font is still missing" >&2
    exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "setup_system: ${missing[*]} installed, but redis-server is still missing" >&2
    exit 1
fi
echo "setup_system: done"
