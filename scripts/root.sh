# Sourced by the install scripts: sets $sudo to what runs a command as root
# (nothing for root, "sudo" where it exists), or stops the script saying
# which Debian packages `$1` needs installed by someone who can.
# Usage: need_root "Chromium is" chromium
need_root() {
  local what="$1"
  shift
  if [ "$(id -u)" -eq 0 ]; then
    sudo=""
  elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
  else
    echo "$what missing and this user cannot install it:" \
      "run 'apt-get install -y $*' as root." >&2
    exit 1
  fi
}
