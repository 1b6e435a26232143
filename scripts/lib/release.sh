# Sourced by the scripts that build a Release demo: installs what is missing, then configures the
# "release" preset, printing the configure log only when it fails.
#   configure_release NAME    NAME prefixes the failure message
configure_release() {
  bash scripts/setup.sh
  local log=build/release-configure.log
  mkdir -p build
  if ! cmake --preset release >"${log}" 2>&1; then
    cat "${log}" >&2
    echo "$1: configuring failed (log above, also in ${log})" >&2
    exit 1
  fi
}
