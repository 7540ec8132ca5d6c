#!/usr/bin/env bash
# Installs what building and testing Ganymede needs on a fresh Debian machine, and
# nothing when it is already there. Idempotent; run by ops/test.sh and ops/local/cluster.sh.
set -euo pipefail

need_apt=()
# The rocksdb crate runs bindgen, which needs libclang.
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Headless Chromium and its WebDriver for the page tests.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
# A real LDAP server for the LDAP authenticator's tests.
[ -x /usr/sbin/slapd ] || need_apt+=(slapd)
# A real Prometheus (and promtool) scrapes a cluster in the metrics tests and checks
# ops/prometheus/.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# Node.js runs the OpenID provider the OIDC authenticator is tested against.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# iproute2's `ip netns` puts each replica in its own network namespace for the
# partition tests (tests/it/nemesis.rs).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)

if ((${#need_apt[@]})); then
  echo "ops/setup.sh: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The project-local Python environment: stock JupyterHub and JupyterLab (ops/venv.sh).
bash "$(dirname "${BASH_SOURCE[0]}")/venv.sh" >/dev/null
# The OpenID provider fixture's npm packages (ops/oidc).
bash "$(dirname "${BASH_SOURCE[0]}")/oidc/setup.sh"
